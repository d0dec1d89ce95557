#!/usr/bin/env bash
# The layering rules of docs/architecture.md, checked over #include lines.
#
#   tests/layering/check_includes.sh [ROOT]     (default: this repository)
#
# Each rule says which directory may not include from where. A rule's directory that does not
# exist (yet) holds nothing to check. Exit status 0 when every rule holds, 1 otherwise; every
# violation is listed as file:line.
set -euo pipefail
root=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

# directory ; forbidden include (extended regex on the path inside "" or <>) ; why
rules=(
  'provider/core;^(transport|hwmodel|connect)/|^boost/asio;the device interface names no backend, no connection set-up, no socket library'
  'hwmodel;^transport/;the modeled adapter shares runtime/ and connect/ with the software transport, never its code'
  'engine;^(transport|hwmodel)/;the shared connection core serves both backends and depends on neither'
  'runtime;^(provider/cm|connect|transport|hwmodel|engine)/;the progress thread is below everything that uses it'
  'connect;^(transport|hwmodel|engine)/;connection set-up serves both backends and knows neither'
)

# Known exceptions: file;included header;why. An exception that no longer occurs is reported
# (remove it) but does not fail the check.
exceptions=(
)

include_re='^[[:space:]]*#[[:space:]]*include[[:space:]]*["<]([^">]+)[">]'
violations=0
for rule in "${rules[@]}"; do
  IFS=';' read -r dir pattern why <<<"$rule"
  [[ -d $root/$dir ]] || continue
  while IFS= read -r -d '' file; do
    rel=${file#"$root"/}
    lineno=0
    while IFS= read -r line; do
      lineno=$((lineno + 1))
      [[ $line =~ $include_re ]] || continue
      inc=${BASH_REMATCH[1]}
      [[ $inc =~ $pattern ]] || continue
      excused=0
      for ex in "${exceptions[@]}"; do
        IFS=';' read -r ex_file ex_inc _ <<<"$ex"
        [[ $rel == "$ex_file" && $inc == "$ex_inc" ]] && excused=1
      done
      if ((excused)); then
        echo "known exception: $rel:$lineno includes $inc"
        continue
      fi
      echo "$rel:$lineno: includes $inc, but $dir/ may not ($why)"
      violations=$((violations + 1))
    done <"$file"
  done < <(find "$root/$dir" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cc' -o -name '*.cpp' \
             -o -name '*.hpp' \) -print0 | sort -z)
done

for ex in "${exceptions[@]}"; do
  IFS=';' read -r ex_file ex_inc _ <<<"$ex"
  if [[ ! -f $root/$ex_file ]] || ! grep -Eq "^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"<]$ex_inc[\">]" "$root/$ex_file"; then
    echo "note: exception $ex_file -> $ex_inc no longer occurs; remove it from $0"
  fi
done

if ((violations)); then
  echo "layering: $violations violation(s)"
  exit 1
fi
echo "layering: all rules hold"
