#!/usr/bin/env bash
# test_cli.sh SEMCACHED SEMCACHE_CLI - semcache-cli against a real semcached:
# every command, human and --json output, and the exit statuses (0 on
# success and on a miss, 1 when the server refuses, 2 on bad usage, 3 when
# the server cannot be reached or answers garbage, 4 on a local failure).
set -u
server=$1
cli=$2
# Every file and data directory of this run lives in its own fresh
# directory: a data directory named by the PID alone, left by a run that
# was killed, came back to life when the PID was reused and restored that
# run's entries and ledger into this one. Named as the C and Python tests'
# (tests/test_tmp.h), in the base they pick (Python's gettempdir()):
# left by a SIGKILL, the next test run removes it once no process has this
# shell's pid and its lock is free. Made as .semcache-new.PID.XXXXXX,
# locked (fd 9, held by this shell and its children), then renamed to its
# run name: a sweep never sees it unlocked. A sweep that took the new one
# before it was locked (its pid misread from another pid namespace) leaves
# the exec or the mv nothing to work on: made again. "command exec": in
# bash's POSIX mode (POSIXLY_CORRECT set) a plain exec whose redirection
# fails ends the script.
base=$(python3 -c 'import tempfile; print(tempfile.gettempdir())') || exit 1
for try in 1 2 3 4 5 6 7 8; do
    t=$(mktemp -d "$base/.semcache-new.$$.XXXXXX") || exit 1
    run="$base/semcache-run.$$.${t##*.}"
    if { command exec 9<"$t"; } 2>/dev/null && flock 9 && [ ! -e "$run" ] &&
        mv -T "$t" "$run" 2>/dev/null; then
        break
    fi
    exec 9<&-
    rmdir "$t" 2>/dev/null
    if [ -e "$run" ] || [ "$try" = 8 ]; then
        echo "test_cli: cannot lock $t and name it $run" >&2
        exit 1
    fi
done
t=$run
addr="ipc://$t/t.ipc"
pass=0
fail=0
"$server" --listen "$addr" --data-dir $t/t.d 2>$t/t.log &
spid=$!
trap 'kill $spid 2>/dev/null; wait $spid 2>/dev/null; rm -rf "$t"' EXIT

# expect STATUS PATTERN -- COMMAND...: runs the CLI, checks status and output.
expect() {
    local want=$1 pattern=$2
    shift 3
    local out status
    out=$("$cli" -a "$addr" "$@" 2>&1)
    status=$?
    if [ "$status" = "$want" ] && printf '%s' "$out" | grep -qE -- "$pattern"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: semcache-cli $* -> status $status (want $want), output: $out" >&2
    fi
}

for _ in $(seq 50); do
    "$cli" -a "$addr" --timeout 200 ping >/dev/null 2>&1 && break
    sleep 0.1
done

expect 0 '^pong from semcached' -- ping
expect 0 '"ok":true,"server":"semcached' -- --json ping
expect 0 '^stored as entry 1$' -- insert --ns faq --text "What is the return policy?" \
    --vec 0.9,0.1,0.2 --response "30 days" --model gpt-4o --input-tokens 10 --output-tokens 20
expect 0 '^hit \(exact, similarity 1.0000\) entry 1: 30 days$' -- lookup --ns faq --text "what is the RETURN   policy?"
expect 0 '^hit \(semantic, similarity 0.99[0-9]+\) entry 1: 30 days$' -- lookup --ns faq --vec 0.85,0.15,0.2
expect 0 '"hit":true,"layer":"semantic"' -- --json lookup --ns faq --vec 0.85,0.15,0.2
expect 0 '^miss \(below_threshold, best similarity' -- lookup --ns faq --vec -0.2,1,0
expect 0 '^hit \(semantic' -- lookup --ns faq --vec -0.2,1,0 --threshold -1
expect 0 '^miss \(no_candidate\)' -- lookup --ns faq --scope other --vec 0.9,0.1,0.2
expect 0 '^miss \(no_namespace\)' -- lookup --ns nowhere --vec 1,2,3
expect 1 'dim: ' -- lookup --ns faq --vec 1,2
expect 1 'nan|bad_request|zero_vector' -- insert --ns faq --vec 0,0,0 --response x
expect 0 '^exact_hits +1$' -- stats --ns faq
expect 0 '"semantic_hits":3' -- --json stats --ns faq
expect 0 'feedback 1: done' -- feedback 1
expect 0 '^miss' -- lookup --ns faq --vec 0.9,0.1,0.2
expect 0 'delete 1: done' -- delete 1
expect 1 'not_found' -- delete 1
expect 0 'flushed faq' -- flush --ns faq
expect 0 '^dropped faq$' -- ns-drop --ns faq
expect 0 '^miss \(no_namespace\)' -- lookup --ns faq --vec 0.9,0.1,0.2
expect 1 'no_namespace' -- ns-drop --ns faq
expect 0 '^stored as entry' -- insert --ns gone --vec 1,2,3 --response x
expect 0 '^\{"ok":true\}$' -- --json ns-drop --ns gone
expect 2 'ns-drop needs --ns' -- ns-drop
expect 2 'needs --ns' -- insert --text hi --response x
expect 1 'namespace names are' -- insert --ns 'bad name!' --vec 1,2 --response x
expect 2 '--vec wants' -- lookup --ns faq --vec 1,,x
# Numbers are read strictly: a decimal comma or a unit is refused, not
# taken as 0 or 1 (a lookup at threshold 0 would hit anything).
expect 2 '--threshold wants a number' -- lookup --ns faq --vec 1,2,3 --threshold 0,9
expect 2 '--threshold wants a number' -- lookup --ns faq --vec 1,2,3 --threshold abc
expect 2 '--ttl wants a number' -- insert --ns faq --vec 1,2,3 --response x --ttl 1h
expect 2 'timeout wants' -- --timeout 5s ping
# Integers are digits only: strtoull skips spaces and takes a sign, so
# " -1" was entry 2^64 - 1 and " -18446744073709551613" was 3.
expect 2 'needs an entry id' -- delete ' -1'
expect 2 'needs an entry id' -- feedback ' -18446744073709551613'
expect 2 'needs an entry id' -- delete +3
expect 2 '--input-tokens wants an integer' -- insert --ns faq --vec 1,2,3 \
    --response x --input-tokens ' -18446744073709551613'
expect 2 'timeout wants' -- --timeout ' 200' ping
# --json after the command, as the README writes it.
expect 0 '"ok":true,"server":"semcached' -- ping --json
# A local failure: the report is printed, the SVG cannot be written.
expect 4 'cannot write' -- report --svg /nonexistent-dir/x.svg
expect 2 'unknown command' -- frobnicate
# A --by the report does not know is bad usage (2), said before any
# server is asked, as for every other option; it was the server's
# refusal (1).
expect 2 "--by wants feature, user or ns, not 'model'" -- report --by model
expect 0 'by feature' -- report --by feature
# The README's synopsis is --help's first line.
synopsis=$("$cli" --help | head -1 | sed 's/^usage: //')
if grep -qF "\`$synopsis\`" "$(dirname "$0")/../README.md"; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL: README.md lacks the synopsis \`$synopsis\`" >&2
fi
# --help says --text and --vec go together (the first insert above sends
# both), not that they exclude each other.
if "$cli" --help | grep -qF 'insert --ns NS (--text T and/or --vec'; then
    pass=$((pass + 1))
else
    fail=$((fail + 1)); echo "FAIL: --help has --text and --vec as exclusive" >&2
fi
# A word where a command takes none is refused, not ignored: "flush
# other" flushed every namespace, "stats other" showed the totals, and
# "delete 1 2" deleted 2 alone.
expect 0 '^stored as entry' -- insert --ns keep --vec 1,2,3 --response x
expect 2 "flush takes no argument 'other' \\(for a namespace: --ns other\\)" -- flush other
expect 2 "stats takes no argument 'keep'" -- stats keep
expect 2 "report takes no argument 'keep'" -- report keep --by feature
expect 2 "lookup takes no argument 'x'" -- lookup --ns keep --vec 1,2,3 x
expect 2 "ping takes no argument 'x'" -- ping x
expect 2 "delete takes one entry id; '2' is a second" -- delete 1 2
expect 2 "feedback takes one entry id; '9' is a second" -- feedback 1 9
expect 0 '^hit' -- lookup --ns keep --vec 1,2,3
# Settings nothing will use are said at start-up.
"$server" --listen "ipc://$t/t-b.ipc" --persist off \
    --tls-cert /nonexistent.pem --repair 2>$t/t-b.log &
bpid=$!
sleep 1
kill $bpid 2>/dev/null
wait $bpid 2>/dev/null
if grep -q 'tls-cert is for tls+tcp:// listeners' $t/t-b.log &&
    grep -q 'persistence is off: ignored' $t/t-b.log; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL: unused settings not said: $(cat $t/t-b.log)" >&2
fi
# --fsync alone is said too; --persist off alone is not.
for args in "--fsync always" ""; do
    # shellcheck disable=SC2086 # two words or none, on purpose
    "$server" --listen "ipc://$t/t-b.ipc" --persist off \
        $args 2>$t/t-b.log &
    bpid=$!
    sleep 1
    kill $bpid 2>/dev/null
    wait $bpid 2>/dev/null
    said=no
    grep -q 'fsync act on the saved state, and persistence is off: ignored' \
        $t/t-b.log && said=yes
    if [ "$said" = "$([ -n "$args" ] && echo yes || echo no)" ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: '$args' with --persist off: said=$said:" \
            "$(cat $t/t-b.log)" >&2
    fi
done
rm -f $t/t-b.log
# A lookup's own tag, and feedback naming it: the false hit is charged
# where the hit was counted, not to the entry's tag.
fbid=$("$cli" -a "$addr" insert --ns fbt --vec 1,0,0 --response x \
    --feature store --model gpt-4o --input-tokens 10 --output-tokens 20 |
    sed -n 's/^stored as entry //p')
expect 0 '^hit' -- lookup --ns fbt --vec 1,0,0 --feature web
expect 0 "feedback $fbid: done" -- feedback "$fbid" --feature web
out=$("$cli" -a "$addr" --json report --ns fbt --by feature 2>&1)
if printf '%s' "$out" | /usr/bin/python3 -c '
import json, sys
rows = {r["key"]: r for r in json.load(sys.stdin)["result"]["rows"]}
ok = (rows["web"]["semantic_hits"] == 1 and rows["web"]["false_hits"] == 1
      and rows["store"]["false_hits"] == 0)
sys.exit(0 if ok else 1)'; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL: report by feature after a tagged lookup and feedback: $out" >&2
fi
# A tag that is not UTF-8 (tags are any bytes): --json stays JSON, the
# byte written as U+FFFD.
expect 0 '^stored as entry' -- insert --ns tags --vec 1,2,3 --response x \
    --user "$(printf 'u\377x')"
expect 0 '^hit' -- lookup --ns tags --vec 1,2,3
out=$("$cli" -a "$addr" --json report --by user 2>&1)
if printf '%s' "$out" | /usr/bin/python3 -c '
import json, sys
keys = [r["key"] for r in json.load(sys.stdin)["result"]["rows"]]
sys.exit(0 if "u\ufffdx" in keys else 1)'; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL: --json report --by user with a non-UTF-8 tag: $out" >&2
fi
# A tag that would drive the terminal (any client can name one): the
# human report writes its control bytes escaped, so neither the escape
# nor a forged row line reaches the screen.
expect 0 '^(hit|miss)' -- lookup --ns tags --vec 1,2,3 \
    --feature "$(printf 'e\033[31mEVIL\nforged  1 99%%')"
out=$("$cli" -a "$addr" report --ns tags --by feature 2>&1)
if printf '%s' "$out" | grep -qF 'e\x1b[31mEVIL\x0aforged' &&
    ! printf '%s' "$out" | grep -q "$(printf '\033')" &&
    ! printf '%s' "$out" | grep -q '^forged'; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL: report --by feature with control bytes in a tag: $out" >&2
fi
# Bytes that only look like UTF-8 (an encoded surrogate, an overlong
# '/') are not UTF-8: written as \xNN too, never passed to the terminal.
expect 0 '^(hit|miss)' -- lookup --ns tags --vec 1,2,3 \
    --feature "$(printf 's\355\240\200o\340\200\257x')"
out=$("$cli" -a "$addr" report --ns tags --by feature 2>&1)
if printf '%s' "$out" | grep -qF 's\xed\xa0\x80o\xe0\x80\xafx'; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL: report --by feature with a surrogate and an overlong form: $out" >&2
fi
# fake_cli REPLY [MEM] -- ARGS...: semcache-cli ARGS against a fake server
# on 127.0.0.1 that answers every request with REPLY (a Python expression,
# packed with msgpack); prints the CLI's exit status, then its output.
# With MEM, the CLI's address space is capped at what a first run with a
# small reply used (once its request came) plus MEM bytes; "skip" when the
# CLI reserves terabytes (AddressSanitizer's shadow), where no cap works.
fake_cli() {
    local reply=$1 mem=$2
    shift 3
    /usr/bin/python3 - "$cli" "$reply" "$mem" "$@" <<'PY'
import os, resource, socket, struct, subprocess, sys, threading
import msgpack
cli, reply, mem, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("closed")
        buf += chunk
    return buf
def run(body, cap=None):
    """The CLI's status, output and VmSize (kB) when its request came."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    seen = []
    def serve():
        try:
            s, _ = lst.accept()
            exact(s, 8)
            s.sendall(b"\x00SP\x00\x00\x31\x00\x00")
            while True:
                (n,) = struct.unpack(">Q", exact(s, 8))
                rid = exact(s, n)[:4]
                with open(f"/proc/{proc.pid}/status") as f:
                    seen.extend(int(l.split()[1]) for l in f
                                if l.startswith("VmSize:"))
                s.sendall(struct.pack(">Q", 4 + len(body)) + rid)
                s.sendall(body)
        except OSError:
            pass
    def limit():
        if cap is not None:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    env = dict(os.environ, MALLOC_ARENA_MAX="1")
    proc = subprocess.Popen([cli, "-a", f"tcp://127.0.0.1:{lst.getsockname()[1]}",
                             "--timeout", "20000"] + args, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=limit)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    out = proc.communicate(timeout=50)[0].decode(errors="replace")
    lst.close()
    return proc.returncode, out, seen[0] if seen else None
body = msgpack.packb(eval(reply), use_bin_type=True)
if mem == "":
    status, out, _ = run(body)
else:
    _, _, base = run(msgpack.packb({"ok": True, "result": {"server": "x"}}))
    if base is None or base > 1 << 30:  # kB: over 1 TiB
        print("skip")
        sys.exit(0)
    status, out, _ = run(body, base * 1024 + int(mem))
print(status)
print(out[:2000], end="")  # a hit of 256 MiB is not shown whole
PY
}
# fexpect STATUS TEXT WHAT [ABSENT]: checks fake_cli's output in $out: its
# status line, TEXT (a fixed string) in it and, given, ABSENT not in it.
fexpect() {
    if [ "$(printf '%s' "$out" | head -1)" = "$1" ] &&
        printf '%s' "$out" | grep -qF -- "$2" &&
        { [ -z "${4:-}" ] || ! printf '%s' "$out" | grep -qF -- "$4"; }; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $3: $out" >&2
    fi
}
# A local failure is 4, not 3 (transport): a 256 MiB reply with room for
# nng's copy of it and not for the client's.
out=$(fake_cli '{"ok": True, "result": {"hit": True, "entry": 7, "response": b"x" * (256 << 20)}}' \
    $((384 << 20)) -- lookup --ns n --vec 1,2,3 2>&1)
if [ "$out" = skip ]; then
    echo "test_cli: address space reserved (ASan?): out of memory not tested"
else
    fexpect 4 'out of memory' "lookup out of memory: want status 4"
fi
# A malformed reply is the transport's failure: 3.
out=$(fake_cli '{"ok": True}' "" -- ping 2>&1)
fexpect 3 'malformed reply' "ping given a reply with no result: want status 3"
# The server's words in --json lookup output are escaped: a quote in the
# layer or the reason left the line no JSON.
out=$(fake_cli '{"ok": True, "result": {"hit": False, "layer": "no\"ne\\", "reason": "a\"b\nc", "similarity": 0.5, "best": None}}' \
    "" -- --json lookup --ns n --vec 1,2,3 2>&1)
if printf '%s' "$out" | /usr/bin/python3 -c '
import json, sys
lines = sys.stdin.read().split("\n", 1)
r = json.loads(lines[1])
sys.exit(0 if lines[0] == "0" and r["layer"] == "no\"ne\\"
         and r["reason"] == "a\"b\nc" else 1)'; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL: --json lookup with quotes in layer and reason: $out" >&2
fi
# A refusal without an error map, or with a code that is not a string
# (libsemcache's SC_EPROTO), or with an empty code: said as malformed
# (3), not as "semcache-cli: : ".
for rep in '{"ok": False}' '{"ok": False, "error": {"code": 5, "message": "x"}}' \
           '{"ok": False, "error": {"code": "", "message": ""}}'; do
    out=$(fake_cli "$rep" "" -- flush --ns n 2>&1)
    fexpect 3 'malformed' "flush given $rep" 'semcache-cli: :'
done
# A report without prices_date: no "(null)" in the heading.
out=$(fake_cli '{"ok": True, "result": {"by": "ns", "total": {}, "rows": [], "cpu_hour": 0.04}}' \
    "" -- report 2>&1)
fexpect 0 'prices of an unknown date' "report without prices_date" '(null)'
# A response that is not text comes out in --json as its bytes, every one
# (it was once a string with U+FFFD for each bad byte); text as a string.
out=$(fake_cli '{"ok": True, "result": {"hit": True, "entry": 7, "response": b"\xff\x00a"}}' \
    "" -- --json lookup --ns n --vec 1,2,3 2>&1)
fexpect 0 '"response":[255,0,97]' "--json lookup of a binary response"
out=$(fake_cli '{"ok": True, "result": {"hit": True, "entry": 7, "response": "caf\u00e9\n".encode()}}' \
    "" -- --json lookup --ns n --vec 1,2,3 2>&1)
fexpect 0 '"response":"café\u000a"' "--json lookup of a text response held as bin"
# Unreachable: status 3, and the message names the address dialed (the
# default one, when -a is left out, is one the user may not know) and
# what to do.
out=$("$cli" -a ipc:///tmp/semcache-no-such-server.ipc --timeout 300 ping 2>&1)
status=$?
if [ $status = 3 ] &&
    printf '%s' "$out" | grep -q 'ipc:///tmp/semcache-no-such-server.ipc: cannot reach the server (is semcached running there? -a ADDR'; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL: unreachable server: status $status: $out" >&2
fi

kill -TERM $spid
wait $spid
status=$?
if [ $status = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: semcached exit $status" >&2; fi

# --config: a bad file stops the start (status 2, the key named); a good one
# sets the listener and creates its namespaces; flags override the file.
cfg=$t/t.json
trap 'kill $spid 2>/dev/null; wait $spid 2>/dev/null; rm -rf "$t"' EXIT
echo '{"threads": 0}' >"$cfg"
out=$("$server" --config "$cfg" 2>&1)
if [ $? = 2 ] && printf '%s' "$out" | grep -q "key 'threads'"; then
    pass=$((pass + 1))
else
    fail=$((fail + 1)); echo "FAIL: bad config: $out" >&2
fi
# Bad flags stop the start with status 2 before anything is loaded: a
# signed number (strtoull would take " -1" as 2^64 - 1, no cap at all),
# --upstream without --http, and an --http that is no HOST:PORT (once
# refused only after the nng listeners had started, with status 1).
for args in "--max-bytes| -1" "--max-bytes|+5" "--upstream|http://127.0.0.1:9" \
    "--http|nope" "--http|127.0.0.1:99999"; do
    out=$("$server" --data-dir $t/t-bad.d \
        "${args%%|*}" "${args#*|}" 2>&1)
    if [ $? = 2 ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL: semcached ${args%%|*} '${args#*|}': $out" >&2
    fi
done
# A --listen URL nng cannot take stops the start saying the forms it
# wants (it once said only "Not supported").
out=$("$server" --persist off --listen foo://127.0.0.1:1 2>&1)
status=$?
if [ $status = 1 ] && printf '%s' "$out" | grep -q 'cannot listen on foo://127.0.0.1:1: .*(a URL is tcp://HOST:PORT, ipc:///PATH or tls+tcp://HOST:PORT)'; then
    pass=$((pass + 1))
else
    fail=$((fail + 1)); echo "FAIL: semcached --listen foo://: status $status: $out" >&2
fi
# An HTTP port taken, the proxy on: the start stops naming the address
# and the cause, with no "HTTP on" line before (it was printed before the
# listen) and no "input/output error" (the proxy's open once said only
# that, naming the upstream).
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)' "$t/t-taken.port" &
taker=$!
for _ in $(seq 300); do [ -f "$t/t-taken.port" ] && break; sleep 0.1; done
hp=$(cat "$t/t-taken.port" 2>/dev/null)
out=$("$server" --persist off --data-dir "$t/t-taken.d" \
    --listen "ipc://$t/t-taken.ipc" --http "127.0.0.1:$hp" \
    --upstream http://127.0.0.1:9/v1 2>&1)
status=$?
kill $taker 2>/dev/null; wait $taker 2>/dev/null
if [ -n "$hp" ] && [ $status = 1 ] &&
    printf '%s' "$out" | grep -q "cannot listen on 127.0.0.1:$hp: Address in use" &&
    ! printf '%s' "$out" | grep -q "semcached: HTTP on \|input/output error"; then
    pass=$((pass + 1))
else
    fail=$((fail + 1)); echo "FAIL: semcached --http on a taken port, proxy on: status $status: $out" >&2
fi
addr="ipc://$t/t-2.ipc"
printf '{"listen": "ipc:///tmp/unused-%s.ipc",\n "namespaces": {"strict": {"threshold": 0.999, "dim": 3}}}\n' $$ >"$cfg"
hport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$server" --config "$cfg" --listen "$addr" --http "127.0.0.1:$hport" \
    --data-dir $t/t-2.d 2>>$t/t.log &
spid=$!
for _ in $(seq 50); do
    "$cli" -a "$addr" --timeout 200 ping >/dev/null 2>&1 && break
    sleep 0.1
done
expect 0 '^stored as entry' -- insert --ns strict --vec 0.9,0.1,0.2 --response r
expect 0 '^miss \(below_threshold' -- lookup --ns strict --vec 0.85,0.15,0.2
expect 0 '^hit \(semantic' -- lookup --ns strict --vec 0.9,0.1,0.2
expect 1 'dim' -- insert --ns strict --vec 1,2 --response r
# The HTTP front of the same daemon (docs/HTTP.md): JSON in and out, and
# /metrics counting what the CLI did.
http() {
    python3 - "$hport" "$@" <<'PY'
import json, sys, urllib.request
port, path = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
PY
}
hexpect() {
    local pattern=$1
    shift
    local out
    out=$(http "$@" 2>&1)
    if printf '%s' "$out" | grep -qE -- "$pattern"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: HTTP $* -> $out" >&2
    fi
}
hexpect '^200 ' /healthz
hexpect '^200 .*"hit": *true.*"layer": *"semantic"' /v1/lookup '{"ns": "strict", "vec": [0.9, 0.1, 0.2]}'
hexpect '^400 .*bad_request' /v1/lookup '{"ns": "strict", "vec": [0.9, 0.1'
hexpect '^200 .*"entry"' /v1/insert '{"ns": "strict", "vec": [0.1, 0.9, 0.2], "response": "via http"}'
hexpect '^200 .*"response": *"via http"' /v1/lookup '{"ns": "strict", "vec": [0.1, 0.9, 0.2]}'
hexpect 'semcache_lookups_total\{ns="strict"\} 4' /metrics
hexpect 'semcache_request_duration_seconds_count\{op="lookup",transport="nng"\} 2' /metrics
hexpect 'semcache_dollars_avoided_total\{ns="strict"\} ' /metrics
# Token counters past a billion are exact on /metrics (here, after the
# latency counts above, which these nng requests would move).
expect 0 '^stored as entry' -- insert --ns big --vec 0.3,0.4,0.5 --response r \
    --input-tokens 1234567891 --output-tokens 7
expect 0 '^hit' -- lookup --ns big --vec 0.3,0.4,0.5
hexpect 'semcache_tokens_avoided_total\{ns="big",kind="input"\} 1234567891$' /metrics
hexpect '^200 \{.*"total": *\{.*"requests": *4' /report
# Written as the front's other JSON: 15 digits at most, a final newline.
if python3 - "$hport" <<'PY'
import re, sys, urllib.request
raw = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/report",
                             timeout=5).read().decode()
nums = re.findall(r"\d+\.\d+", raw)
long = [m for m in nums if len(m.replace(".", "").lstrip("0")) > 15]
sys.exit(0 if raw.endswith("\n") and not long else 1)
PY
then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL: GET /report: no final newline, or floats of 17 digits" >&2
fi
kill -TERM $spid
wait $spid
# A configuration one of whose namespaces does not fit the saved one stops
# the start (status 1) and changes nothing: the other namespace's lowered
# cap has not evicted (it did, and the eviction was saved).
printf '{"namespaces": {"strict": {"max_entries": 1, "threshold": 0.999},\n "big": {"dim": 7}}}\n' >"$cfg"
out=$("$server" --config "$cfg" --listen "$addr" \
    --data-dir $t/t-2.d 2>&1)
st=$?
"$server" --listen "$addr" --data-dir $t/t-2.d \
    2>>$t/t.log &
spid=$!
for _ in $(seq 50); do
    "$cli" -a "$addr" --timeout 200 ping >/dev/null 2>&1 && break
    sleep 0.1
done
if [ $st = 1 ] && printf '%s' "$out" | grep -q "nothing was changed"; then
    pass=$((pass + 1))
else
    fail=$((fail + 1)); echo "FAIL: a config that does not fit: $st $out" >&2
fi
expect 0 '"entries":2' -- --json stats --ns strict
kill -TERM $spid
wait $spid

# The caps on connections. At a descriptor limit of 96, 64 are kept for
# files and the like: HTTP gets half of the other 32, nng clients the
# rest. HTTP's (patched nng): with 16 connections held silent, a 17th is
# served, the one that waited longest is closed and the others are not,
# the nng listener still serves; once they are gone HTTP serves.
addr="ipc://$t/t-3.ipc"
hport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
: >$t/t-3.log
(ulimit -n 96 && exec "$server" --listen "$addr" --http "127.0.0.1:$hport" \
    --http-max-conns 1000 --max-clients 1000 --persist off \
    --data-dir $t/t-3.d 2>$t/t-3.log) &
spid=$!
for _ in $(seq 50); do
    "$cli" -a "$addr" --timeout 200 ping >/dev/null 2>&1 && break
    sleep 0.1
done
if grep -q "no cap on connections" $t/t-3.log; then
    echo "test_cli: the system's nng: no HTTP connection cap to check"
elif grep -q "at most 16 connections at once; descriptor limit 96" \
        $t/t-3.log &&
    grep -q "at most 16 nng clients at once; descriptor limit 96" \
        $t/t-3.log; then
    pass=$((pass + 1))
    out=$(python3 - "$hport" "$cli" "$addr" <<'PY'
import select, socket, subprocess, sys, time
port, cli, addr = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def healthz(s):
    s.settimeout(5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
over = socket.create_connection(("127.0.0.1", port))
over_served = healthz(over)
ready, _, _ = select.select(held, [], [], 1.0)
closed = []
for s in ready:
    try:
        if s.recv(64) == b"":
            closed.append(held.index(s))
    except OSError:
        closed.append(held.index(s))
served = healthz(held[1])
ping = subprocess.run([cli, "-a", addr, "ping"], capture_output=True).returncode
for s in held + [over]:
    s.close()
again = False
for _ in range(50):
    with socket.create_connection(("127.0.0.1", port)) as s:
        again = healthz(s)
    if again:
        break
    time.sleep(0.1)
print(f"over {over_served} closed {closed} next {served} ping {ping} again {again}")
PY
)
    # All silent: the first accepted has waited longest.
    if [ "$out" = "over True closed [0] next True ping 0 again True" ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL: HTTP connection cap: $out" >&2
    fi
else
    fail=$((fail + 1))
    echo "FAIL: no HTTP cap line: $(cat $t/t-3.log)" >&2
fi
kill -TERM $spid
wait $spid
rm -rf $t/t-3.d $t/t-3.log

echo "test_cli: $pass passed, $fail failed"
[ $fail = 0 ]
