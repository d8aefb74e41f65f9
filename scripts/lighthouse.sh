#!/usr/bin/env bash
# scripts/lighthouse.sh: audit the chat UI with Lighthouse in mobile mode and fail below the bar.
#
# Serves the app as in production (DEBUG=false, collectstatic: hashed file names, long cache headers,
# compressed) on a temporary SQLite database seeded with demo data (`manage.py seed_demo`), then runs
# Lighthouse 12.2.3 (pinned by tools/package-lock.json) with Debian's chromium on eleven pages: the
# log-in, sign-up and password-reset pages, the thread list, a thread with a long conversation and its
# share link's page, a 2,000-message thread ("long"), the account settings page, the usage page and the staff dashboard. Prints the four category scores
# per page and exits 1 if any is below LH_MIN.
#
# Needs: chromium (apt-get install -y chromium), node >= 18 and the dev venv (`make install-dev`: websockets
# sets the session cookie over the DevTools protocol). Lighthouse itself is installed here if missing.
# Environment: LH_MIN (default 95), LH_RUNS (runs per page, median; default 3), PORT (default: a free
# one), CHROME_PATH (default /usr/bin/chromium), LH_REPORT_DIR (keep the JSON reports there; default
# artifacts/lighthouse), LH_TIMEOUT (seconds per run, default 180), LH_PAGES (the names of the pages to
# audit, space-separated, for example "thread dashboard"; default: all eleven).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

LH_MIN="${LH_MIN:-95}"
LH_RUNS="${LH_RUNS:-3}"
LH_TIMEOUT="${LH_TIMEOUT:-180}"
CHROME_PATH="${CHROME_PATH:-/usr/bin/chromium}"
REPORT_DIR="${LH_REPORT_DIR:-$ROOT/artifacts/lighthouse}"
PY="$ROOT/.venv/bin/python"
LIGHTHOUSE="$ROOT/tools/node_modules/.bin/lighthouse"

die() { echo "lighthouse.sh: $*" >&2; exit 2; }
[[ -x "$CHROME_PATH" ]] || die "no browser at $CHROME_PATH: apt-get install -y chromium (or set CHROME_PATH)"
command -v node >/dev/null || die "node not found: install Node 20"
[[ -x "$PY" ]] || die "no venv: run 'make install-dev' first"
if [[ "$(node -p 'try{require("./tools/node_modules/lighthouse/package.json").version}catch{""}')" != "12.2.3" ]]; then
  echo "installing lighthouse from tools/package-lock.json" >&2
  npm ci --prefix tools --no-audit --no-fund >&2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatapp-lh.XXXXXX")"
SERVER_PID=""
CHROME_PID=""
cleanup() {
  # Only what this script started, by pid: the browser and the server.
  for pid in $CHROME_PID $SERVER_PID; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  rm -rf "$WORK" 2>/dev/null || { sleep 1; rm -rf "$WORK"; }
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT="${PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
BASE="http://127.0.0.1:$PORT"
# Production-like settings; nothing here reaches outside the machine. CSRF_TRUSTED_ORIGINS: without
# DEBUG, the thread page's WebSocket Origin (http, a non-default port) must be trusted by name.
export DEBUG=false SECRET_KEY="lighthouse-$RANDOM-$RANDOM-$RANDOM-not-a-real-secret-key-0123456789" \
  ALLOWED_HOSTS=127.0.0.1,localhost SECURE_SSL_REDIRECT=false \
  FIELD_ENCRYPTION_KEY="$("$PY" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
  CSRF_TRUSTED_ORIGINS="$BASE,http://localhost:$PORT" \
  DATABASE_URL="sqlite:///$WORK/db.sqlite3" DJANGO_SETTINGS_MODULE=chatapp.settings
unset REDIS_URL

"$PY" manage.py collectstatic --noinput -v0
"$PY" manage.py migrate --noinput -v0
# --huge-exchanges 1000: a 2,000-message thread too (#18: it must open with performance >= 95).
LH_PAGES="${LH_PAGES:-}"
wanted() { [[ -z "$LH_PAGES" || " $LH_PAGES " == *" $1 "* ]]; }
HUGE=0
if wanted long; then HUGE=1000; fi
SEED="$("$PY" manage.py seed_demo --session --huge-exchanges "$HUGE" | tail -n 1)"
THREAD_ID="$(node -p 'JSON.parse(process.argv[1]).thread_id' "$SEED")"
HUGE_ID="$(node -p 'JSON.parse(process.argv[1]).huge_thread_id' "$SEED")"
# Usage for the seeded user's replies, so the usage page has its chart and table to audit.
"$PY" manage.py shell -c "
from billing.models import UsageRecord; from threads.models import Message, Thread
t = Thread.objects.get(pk=$THREAD_ID)
for m in Message.objects.filter(thread=t, role='assistant'):
    UsageRecord.objects.get_or_create(kind='charge', message_id=m.pk, defaults=dict(user=t.owner, provider=t.provider, model=t.model, input_tokens=40 + m.pk, output_tokens=len(m.content.split()), cost_usd=0.0001))
"
SESSION="$(node -p 'JSON.parse(process.argv[1]).sessionid' "$SEED")"
# The seeded thread's share link (#18): its read-only page, for anyone with the link.
SHARE_TOKEN="$("$PY" manage.py shell -c "from threads.models import Thread; from threads.share import share_create; print(share_create(thread=Thread.objects.get(pk=$THREAD_ID)).token)" | tail -n 1)"

"$ROOT/.venv/bin/daphne" -e "tcp:port=$PORT:interface=127.0.0.1" chatapp.asgi:application >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
healthy() { "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$BASE/healthz" 2>/dev/null; }
for _ in $(seq 1 100); do
  healthy && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server exited"; }
  sleep 0.2
done
healthy || { cat "$WORK/server.log" >&2; die "the server did not answer /healthz"; }

mkdir -p "$REPORT_DIR" "$WORK/profile"
# One Chromium for all runs, driven by Lighthouse over its DevTools port. Not Lighthouse's own launch:
# the thread page opens a WebSocket, and a WebSocket handshake carries a real cookie but not the
# headers of --extra-headers, so the session cookie is put into this browser's cookie jar (Lighthouse
# resets storage between runs, but not cookies). Flags: root in a container, closed network.
"$CHROME_PATH" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --disable-dev-shm-usage --disable-default-apps \
  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1" \
  --remote-debugging-port=0 --user-data-dir="$WORK/profile" about:blank >"$WORK/chrome.log" 2>&1 &
CHROME_PID=$!
for _ in $(seq 1 100); do [[ -s "$WORK/profile/DevToolsActivePort" ]] && break; sleep 0.1; done
[[ -s "$WORK/profile/DevToolsActivePort" ]] || { cat "$WORK/chrome.log" >&2; die "chromium did not start"; }
CDP_PORT="$(head -n 1 "$WORK/profile/DevToolsActivePort")"

log_in() {
  "$PY" - "$CDP_PORT" "$BASE" "$SESSION" <<'PYEOF'
import json, sys, urllib.request
from websockets.sync.client import connect
port, base, session = sys.argv[1:]
with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version") as r:
    browser_ws = json.load(r)["webSocketDebuggerUrl"]
cookie = {"name": "sessionid", "value": session, "url": base, "httpOnly": True, "sameSite": "Lax"}
with connect(browser_ws, max_size=None) as ws:
    ws.send(json.dumps({"id": 1, "method": "Storage.setCookies", "params": {"cookies": [cookie]}}))
    reply = json.loads(ws.recv())
if "error" in reply:
    sys.exit(f"could not set the session cookie: {reply['error']}")
PYEOF
}

# audit NAME PATH [lighthouse args...]: LH_RUNS runs, prints "NAME {scores}" (medians), records failures.
FAILED=0
audit() {
  local name="$1" path="$2"; shift 2
  wanted "$name" || return 0
  local reports=() i
  for ((i = 1; i <= LH_RUNS; i++)); do
    local out="$REPORT_DIR/$name-$i.json" attempt ok=0
    # Lighthouse itself sometimes fails to record a trace ("NO_NAVSTART ... Please run Lighthouse
    # again"): such a run is retried, up to twice. Low scores are never retried: the median judges them.
    for attempt in 1 2 3; do
      if timeout -s INT -k 15 "$LH_TIMEOUT" "$LIGHTHOUSE" "$BASE$path" --port="$CDP_PORT" \
        --form-factor=mobile --only-categories=performance,accessibility,best-practices,seo \
        --output=json --output-path="$out" --no-enable-error-reporting --quiet "$@" >"$WORK/lh.log" 2>&1 \
        && node -e 'process.exit(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).runtimeError ? 1 : 0)' "$out"; then
        ok=1
        break
      fi
      tail -n 5 "$WORK/lh.log" >&2
      echo "$name: Lighthouse run $i, attempt $attempt failed; trying again" >&2
    done
    if [[ $ok != 1 ]]; then
      echo "$name: Lighthouse failed (run $i)" >&2
      FAILED=1
      return
    fi
    reports+=("$out")
  done
  node -e '
    const fs = require("fs");
    const [name, min, ...files] = process.argv.slice(1);
    const ids = ["performance", "accessibility", "best-practices", "seo"];
    const runs = files.map((f) => JSON.parse(fs.readFileSync(f, "utf8")));
    const median = (a) => { const s = [...a].sort((x, y) => x - y), m = s.length >> 1; return s.length % 2 ? s[m] : Math.round((s[m - 1] + s[m]) / 2); };
    const scores = {};
    for (const id of ids) {
      const all = runs.map((r) => r.categories[id] && r.categories[id].score);
      scores[id] = all.some((s) => typeof s !== "number") ? null : median(all.map((s) => Math.round(s * 100)));
    }
    const low = ids.filter((id) => scores[id] === null || scores[id] < Number(min));
    console.log(`${name.padEnd(7)} ${JSON.stringify(scores)}${low.length ? "  BELOW " + min + ": " + low.join(", ") : ""}`);
    // Explain a low score: the failing audits of the last run, with their weight.
    const last = runs[runs.length - 1];
    for (const id of low) {
      for (const ref of last.categories[id].auditRefs) {
        const a = last.audits[ref.id];
        if (ref.weight > 0 && a.score !== null && a.score < 0.9) console.log(`        ${id}: ${ref.id} (${a.score}) ${a.displayValue || ""}`);
      }
    }
    process.exit(low.length ? 1 : 0);
  ' "$name" "$LH_MIN" "${reports[@]}" || FAILED=1
}

echo "Lighthouse $("$LIGHTHOUSE" --version), mobile, median of $LH_RUNS run(s), bar $LH_MIN; reports in $REPORT_DIR"
audit login "/accounts/login/"  # logged out: a session would redirect it to the thread list
audit signup "/accounts/signup/"
audit reset "/accounts/password/reset/"
log_in
audit list "/"
audit thread "/threads/$THREAD_ID/"
audit long "/threads/$HUGE_ID/"  # 2,000 messages: the newest page is rendered, older ones load on scroll
audit settings "/accounts/settings/"
audit usage "/usage/"
# The staff dashboard (#22 item 9), as the same user made staff (an update: no signal, the session stays).
USERNAME="$(node -p 'JSON.parse(process.argv[1]).username' "$SEED")"
"$PY" manage.py shell -c "from django.contrib.auth.models import User; User.objects.filter(username='$USERNAME').update(is_staff=True)"
audit dashboard "/staff/dashboard/"
# A share page is noindex by design (#18): Lighthouse's is-crawlable audit would fail it for that alone.
audit share "/s/$SHARE_TOKEN" --skip-audits=is-crawlable
exit "$FAILED"
