#!/bin/sh
# Fails when a source file includes a layer it must not know (README "Architecture"):
#   core/   the bottom: includes only core/
#   model/  the domain: core/ and model/ only (never a database, HTTP or an adapter)
#   ext/    adapters: core/ and ext/ only
#   http/, store/  plumbing: never an endpoint (api/); http/ never store/, store/ never http/
#   sig/    webhook signatures: core/ and sig/ only
#   elevenlabs/  the ElevenLabs API client (health, backfill): never http/ nor api/
#   seal/   the encryption envelope (AES-256-GCM, blind index): core/, ext/ and seal/ only
#   audit/  the audit recorder (read entries, rejected authentications): never http/ nor api/
#   queue/  broker publishers (Redis Streams, NATS JetStream): core/, ext/, model/ and queue/ only
#   outbound/  the outbox dispatcher (signed webhooks, brokers): never http/ nor api/
# Usage: tools/check-layering.sh [SRC_DIR]   (default src). Run by make test.
src=${1:-src}

# check DIR ALLOWED...: prints every quoted include "x/..." in DIR whose x is not allowed.
check() {
  dir=$1
  shift
  [ -d "$src/$dir" ] || return 0
  grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^"/]+/' "$src/$dir" |
    while IFS= read -r line; do
      target=$(printf '%s\n' "$line" | sed -E 's/.*#[[:space:]]*include[[:space:]]*"([^"/]+)\/.*/\1/')
      ok=0
      for allowed in "$@"; do [ "$target" = "$allowed" ] && ok=1; done
      [ $ok -eq 1 ] || echo "layering: $dir/ must not include $target/: $line"
    done
}

problems=$(
  check core core
  check model core model
  check ext core ext
  check http core ext http
  check store core ext model seal store
  check seal core ext seal
  check audit core ext model store audit
  check sig core sig
  check elevenlabs core ext model store sig elevenlabs
  check queue core ext model queue
  check outbound core ext model store sig queue outbound
)
if [ -n "$problems" ]; then
  printf '%s\n' "$problems" >&2
  exit 1
fi
