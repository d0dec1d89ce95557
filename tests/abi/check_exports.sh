#!/usr/bin/env bash
# check_exports.sh - compare the dynamic export surface of our libibverbs.so.1
# and librdmacm.so.1 with Debian 12's rdma-core 44 libraries.
#
# Why: the libraries are drop-in replacements.  Consumers are linked BIND_NOW
# against versioned symbols, and glibc refuses to load a program whose
# referenced version nodes or versioned names are missing, so the export
# tables must match the real ones exactly.
#
# Compared, per library:
#   - every defined dynamic symbol (not UND, not the version-definition
#     pseudo-symbols) as: version node, name, default ("@@") or non-default
#     ("@") binding to that node, symbol type (FUNC/OBJECT/...), and for data
#     objects also the size (a size change breaks copy relocations);
#   - the version definitions (.gnu.version_d): names, flags and parents.
#
# Usage: check_exports.sh OUR_LIBIBVERBS_SO OUR_LIBRDMACM_SO
# The reference libraries default to the installed ones; override with
# REF_LIBIBVERBS=... REF_LIBRDMACM=... if needed.
# Exit status: 0 identical, 1 differences found, 2 usage or tool error.

set -euo pipefail

usage() {
	echo "usage: $0 OUR_LIBIBVERBS_SO OUR_LIBRDMACM_SO" >&2
	exit 2
}

[[ $# -eq 2 ]] || usage

REF_LIBIBVERBS=${REF_LIBIBVERBS:-/usr/lib/x86_64-linux-gnu/libibverbs.so.1}
REF_LIBRDMACM=${REF_LIBRDMACM:-/usr/lib/x86_64-linux-gnu/librdmacm.so.1}

command -v readelf >/dev/null 2>&1 || { echo "$0: readelf (binutils) not found" >&2; exit 2; }

for f in "$1" "$2" "$REF_LIBIBVERBS" "$REF_LIBRDMACM"; do
	[[ -r $f ]] || { echo "$0: cannot read $f" >&2; exit 2; }
done

# One line per exported symbol: VERSION<TAB>NAME<TAB>default|non-default<TAB>TYPE[<TAB>size=N]
exports_of() {
	local lib=$1 out vnames
	out=$(LC_ALL=C readelf --dyn-syms -W "$lib") || { echo "$0: readelf failed on $lib" >&2; return 2; }
	vnames=$(verdefs_of "$lib" | cut -f1 | tr '\n' ' ')
	printf '%s\n' "$out" | LC_ALL=C awk -v vnames="$vnames" '
		BEGIN {
			split("", is_vername)
			n = split(vnames, v, " ")
			for (i = 1; i <= n; i++)
				is_vername[v[i]] = 1
		}
		# Symbol rows look like:
		#   Num: Value Size Type Bind Vis Ndx Name[@VER|@@VER] [(N)]
		$1 ~ /^[0-9]+:$/ && NF >= 8 {
			size = $3; type = $4; bind = $5; ndx = $7; full = $8
			if (ndx == "UND" || bind == "LOCAL")
				next
			if (index(full, "@@") > 0) {
				split(full, p, "@@"); name = p[1]; ver = p[2]; kind = "default"
			} else if (index(full, "@") > 0) {
				split(full, p, "@"); name = p[1]; ver = p[2]; kind = "non-default"
			} else {
				name = full; ver = "(unversioned)"; kind = "default"
			}
			# Each version node also appears as an ABS symbol named after it
			# (readelf prints it as NODE or NODE@@NODE depending on version).
			if (ndx == "ABS" && (name == ver || name in is_vername))
				next
			line = ver "\t" name "\t" kind "\t" type
			if (type == "OBJECT" || type == "TLS" || type == "COMMON")
				line = line "\tsize=" size
			print line
		}' | LC_ALL=C sort -u
}

# One line per version definition: NAME<TAB>flags=F<TAB>parents=P1,P2
verdefs_of() {
	local lib=$1 out
	out=$(LC_ALL=C readelf -V -W "$lib") || { echo "$0: readelf failed on $lib" >&2; return 2; }
	printf '%s\n' "$out" | LC_ALL=C awk '
		/^Version definition section/ { in_vd = 1; next }
		/^Version (needs|symbols) section/ { flush(); in_vd = 0; next }
		!in_vd { next }
		/ Name: / {
			flush()
			name = $NF
			flags = $0; sub(/.*Flags: */, "", flags); sub(/ +Index:.*/, "", flags)
			parents = ""
			have = 1
			next
		}
		/ Parent [0-9]+: / {
			parents = (parents == "" ? "" : parents ",") $NF
			next
		}
		function flush() {
			if (have)
				print name "\tflags=" flags "\tparents=" (parents == "" ? "-" : parents)
			have = 0
		}
		END { flush() }' | LC_ALL=C sort
}

# Print a captured multi-line value, or nothing at all when it is empty.
lines() {
	if [[ -n $1 ]]; then
		printf '%s\n' "$1"
	fi
}

status=0

# compare LABEL OURS REFERENCE
compare() {
	local label=$1 ours=$2 ref=$3
	local our_syms ref_syms our_vd ref_vd sym_diff vd_diff n_syms n_vd
	our_syms=$(exports_of "$ours")
	ref_syms=$(exports_of "$ref")
	our_vd=$(verdefs_of "$ours")
	ref_vd=$(verdefs_of "$ref")

	local ok=1
	if ! sym_diff=$(diff -u --label "installed $ref (exports)" --label "ours $ours (exports)" \
		<(lines "$ref_syms") <(lines "$our_syms")); then
		ok=0
		echo "$label: exported symbols differ (- only in installed, + only in ours):"
		printf '%s\n' "$sym_diff" | tail -n +3 | awk '/^[-+]/'
	fi
	if ! vd_diff=$(diff -u --label "installed $ref (version definitions)" \
		--label "ours $ours (version definitions)" \
		<(lines "$ref_vd") <(lines "$our_vd")); then
		ok=0
		echo "$label: version definitions differ (- only in installed, + only in ours):"
		printf '%s\n' "$vd_diff" | tail -n +3 | awk '/^[-+]/'
	fi

	n_syms=$(lines "$ref_syms" | awk 'NF { n++ } END { print n + 0 }')
	n_vd=$(lines "$ref_vd" | awk 'NF { n++ } END { print n + 0 }')
	if [[ $ok -eq 1 ]]; then
		echo "$label: $n_syms exports identical, $n_vd version definitions identical"
	else
		echo "$label: DIFFERENT from installed $ref"
		status=1
	fi
}

compare libibverbs "$1" "$REF_LIBIBVERBS"
compare librdmacm "$2" "$REF_LIBRDMACM"

exit "$status"
