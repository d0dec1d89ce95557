#!/usr/bin/env bash
# Both backends side by side: a perftest matrix (send/write/read x bandwidth/latency x sizes)
# on the software iWARP backend and on the modeled adapter (fast mode), with CPU time per byte
# and system calls per operation of both processes.
#
#   perftest-configs/compare-backends.sh [--out DIR] [--quick]
#
# Writes DIR/compare.md (one table), DIR/compare.csv and DIR/compare.svg (one plot), and
# prints the table. CPU time per byte = (user + system time of server and client) / bytes
# moved; syscalls per operation = strace -f -c totals of server and client divided by the
# iterations (set-up included, so short runs overstate it: the column is an upper bound).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
out="$bench_root/build/compare"
quick=0
parse_opts out quick! -- "$@"
mkdir -p "$out"

if [ "$quick" = 1 ]; then bw_sizes="4096 65536"; lat_sizes="2"; n_bw=2000; n_lat=1000
else bw_sizes="64 4096 65536 1048576"; lat_sizes="2 4096"; n_bw=5000; n_lat=5000; fi

# pair WRAP PROG SIZE ITERS BACKEND: server and client, each under WRAP, a command whose last
# word is an output file prefix (".srv"/".cli" is appended); client output in $tmp/cli.out
pair() {
  local wrap=$1 prog=$2 size=$3 n=$4 be=$5 port
  port=$(free_port)
  ECA_BACKEND=$be $wrap.srv "$run" "$prog" -R -F -p "$port" -s "$size" -n "$n" >"$tmp/srv.out" 2>&1 &
  local spid=$!
  pids+=("$spid")
  wait_port "$port" || { echo "server did not listen" >&2; return 1; }
  ECA_BACKEND=$be $wrap.cli "$run" "$prog" -R -F -p "$port" -s "$size" -n "$n" 127.0.0.1 \
    >"$tmp/cli.out" 2>&1
  wait "$spid"
}

# one PROG SIZE ITERS BACKEND -> "value cpu_s syscalls" (value: MiB/s or us). The value and
# the CPU time come from a plain run; the system calls from a second run under strace, which
# would distort the first.
one() {
  local prog=$1 size=$2 n=$3 be=$4 v cpu sc
  pair "/usr/bin/time -f %U_%S -o $tmp/t" "$prog" "$size" "$n" "$be"
  case "$prog" in
    *_bw) v=$(awk -v s="$size" '$1 == s && NF >= 5 {print $4}' "$tmp/cli.out") ;;
    *) v=$(awk -v s="$size" '$1 == s && NF >= 6 {print $6}' "$tmp/cli.out") ;;
  esac
  [ -n "$v" ] || { echo "$prog $size on $be: no result" >&2; cat "$tmp/cli.out" >&2; return 1; }
  cpu=$(tr '_' ' ' <"$tmp/t.srv" | awk '{s += $1 + $2} END {print s}')
  cpu=$(tr '_' ' ' <"$tmp/t.cli" | awk -v c="$cpu" '{s += $1 + $2} END {print s + c}')
  pair "strace -f -c -o $tmp/s" "$prog" "$size" "$n" "$be"
  sc=$(awk '/ total$/ {s += $4} END {print s+0}' "$tmp/s.srv" "$tmp/s.cli")
  echo "$v $cpu $sc"
}

echo "test,size,backend,value,unit,cpu_ns_per_byte,syscalls_per_op" >"$out/compare.csv"
for prog in ib_send_bw ib_write_bw ib_read_bw ib_send_lat ib_write_lat ib_read_lat; do
  case "$prog" in *_bw) sizes=$bw_sizes; n=$n_bw; unit="MiB/s" ;; *) sizes=$lat_sizes; n=$n_lat; unit="us" ;; esac
  for size in $sizes; do
    for be in software hwmodel; do
      read -r v cpu sc < <(one "$prog" "$size" "$n" "$be")
      awk -v p="$prog" -v s="$size" -v b="$be" -v v="$v" -v u="$unit" -v c="$cpu" -v sc="$sc" -v n="$n" \
        'BEGIN {bytes = s * n; if (p ~ /_lat$/) bytes *= 2;
                printf "%s,%s,%s,%s,%s,%.3f,%.4f\n", p, s, b, v, u, c * 1e9 / bytes, sc / n}' \
        >>"$out/compare.csv"
      echo "$prog $size $be: $v $unit" >&2
    done
  done
done

/usr/bin/python3 - "$out" <<'PY'
import csv, sys, os
out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "compare.csv"))))
keys = []
for r in rows:
    k = (r["test"], r["size"], r["unit"])
    if k not in keys: keys.append(k)
get = {(r["test"], r["size"], r["backend"]): r for r in rows}
lines = ["| test | size [B] | software | hwmodel (fast) | unit | CPU ns/byte sw / hw | syscalls/op sw / hw |",
         "| --- | ---: | ---: | ---: | --- | ---: | ---: |"]
for t, s, u in keys:
    a, b = get[(t, s, "software")], get[(t, s, "hwmodel")]
    lines.append(f"| {t} | {s} | {a['value']} | {b['value']} | {u} | "
                 f"{a['cpu_ns_per_byte']} / {b['cpu_ns_per_byte']} | "
                 f"{a['syscalls_per_op']} / {b['syscalls_per_op']} |")
open(os.path.join(out, "compare.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
# one plot: grouped bars per test/size, software vs hwmodel, log scale, bandwidth and latency panels
import math
W, H, pad = 1000, 420, 60
panels = [("bandwidth [MiB/s]", [k for k in keys if k[2] == "MiB/s"]),
          ("latency [us]", [k for k in keys if k[2] == "us"])]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H*2}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H*2}" fill="white"/>']
colors = {"software": "#4477aa", "hwmodel": "#ee6677"}
for pi, (title, ks) in enumerate(panels):
    y0 = pi * H
    vals = [float(get[(t, s, b)]["value"]) for t, s, _ in ks for b in ("software", "hwmodel")]
    vals = [v for v in vals if v > 0]
    if not ks or not vals: continue
    lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
    if hi == lo: hi += 1
    ph = H - 2 * pad
    def yv(v): return y0 + pad + ph - (math.log10(max(v, 10**lo)) - lo) / (hi - lo) * ph
    svg.append(f'<text x="{W/2}" y="{y0+25}" text-anchor="middle" font-size="14">{title} (log scale)</text>')
    svg.append(f'<line x1="{pad}" y1="{y0+pad+ph}" x2="{W-pad}" y2="{y0+pad+ph}" stroke="black"/>')
    for e in range(lo, hi + 1):
        y = yv(10**e)
        svg.append(f'<line x1="{pad}" y1="{y}" x2="{W-pad}" y2="{y}" stroke="#ddd"/>')
        svg.append(f'<text x="{pad-5}" y="{y+4}" text-anchor="end">1e{e}</text>')
    gw = (W - 2 * pad) / len(ks)
    for i, (t, s, _) in enumerate(ks):
        for j, b in enumerate(("software", "hwmodel")):
            v = float(get[(t, s, b)]["value"])
            x = pad + i * gw + gw * 0.15 + j * gw * 0.35
            y = yv(v)
            svg.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{gw*0.33:.1f}" height="{y0+pad+ph-y:.1f}" fill="{colors[b]}"/>')
        svg.append(f'<text x="{pad+i*gw+gw/2:.1f}" y="{y0+pad+ph+15}" text-anchor="middle">{t.replace("ib_","")} {s}B</text>')
    for j, b in enumerate(("software", "hwmodel (fast)")):
        svg.append(f'<rect x="{W-pad-170}" y="{y0+35+j*16}" width="10" height="10" fill="{list(colors.values())[j]}"/>')
        svg.append(f'<text x="{W-pad-155}" y="{y0+44+j*16}">{b}</text>')
svg.append("</svg>")
open(os.path.join(out, "compare.svg"), "w").write("\n".join(svg) + "\n")
PY
echo
echo "wrote $out/compare.md, $out/compare.csv, $out/compare.svg"
echo "reproduce: $0 --out $out$([ "$quick" = 1 ] && echo ' --quick')"
