#!/usr/bin/env bash
# Start PostgreSQL and Redis on 127.0.0.1 if they are not already answering.
# Uses Debian's packages (as on the development and CI machines); installs them if missing.
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! command -v pg_ctlcluster >/dev/null || ! command -v redis-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq postgresql redis-server >/dev/null
fi
if ! pg_up; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! redis_up; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 1 30); do
    if pg_up && redis_up; then echo "services: postgresql and redis are up"; exit 0; fi
    sleep 1
done
echo "services: postgresql or redis did not come up" >&2
exit 1
