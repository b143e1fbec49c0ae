#!/usr/bin/env bash
# The real clients the slow tests drive, from Debian's packages when they are missing: PgJDBC on Java
# (DBeaver's driver), chromium (the dashboard in a headless browser) and a CJK font for its screenshots.
set -euo pipefail
missing=()
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -d /usr/share/fonts/truetype/wqy ] || missing+=(fonts-wqy-microhei)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages (the slow tests will say which): ${missing[*]}" >&2
  exit 0
fi
echo "installing ${missing[*]} (apt-get)" >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
