#!/bin/sh
# Used by `make run`: if no API key is configured (environment or .env), generate one into
# .env (mode 600) and print it once, so a newcomer can call the API right away.
set -eu
if [ -n "${API_SECRET_KEY:-}" ]; then exit 0; fi
if [ -f .env ] && grep -Eq '^[[:space:]]*(export[[:space:]]+)?API_SECRET_KEY[[:space:]]*=[[:space:]]*[^[:space:]#]' .env; then
  exit 0
fi
key=$(./gensendrep genkey)
umask 077
[ -f .env ] || : >.env
printf 'API_SECRET_KEY=%s\n' "$key" >>.env
echo "No API key was configured; generated one and saved it in .env:"
echo ""
echo "    API_SECRET_KEY=$key"
echo ""
echo "Use it as:  curl -H 'Authorization: Bearer $key' http://localhost:8000/api/v1/conversations"
