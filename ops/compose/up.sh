#!/usr/bin/env bash
# Brings up the cluster of docker-compose.yml and does the operator's admin steps, exactly as
# on separate machines: the first coordinator forms the group, the other two are added as
# members, each node gets its own invitation, each gateway's key is registered, and a public
# bucket `cache` and an access key are created. Prints the S3 endpoints and the credentials.
#
#   ops/image/build.sh target/release/cairn cairn:latest && ops/compose/up.sh
#
# What it generated (admin token, invitations, access key) is kept in the state file
# ($CAIRN_COMPOSE_STATE, default ops/compose/cluster.env, mode 0600); running the script
# again with that file only starts the containers. `docker-compose down -v` (or
# `docker compose down -v`) and removing the state file start over.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=${CAIRN_COMPOSE_STATE:-$here/cluster.env}
export CAIRN_NET=${CAIRN_NET:-10.73.0}
export CAIRN_S3_PORT_1=${CAIRN_S3_PORT_1:-9000} CAIRN_S3_PORT_2=${CAIRN_S3_PORT_2:-9010}

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -f "$here/docker-compose.yml" "$@"
    else
        docker-compose -f "$here/docker-compose.yml" "$@"
    fi
}
# `cairn admin` run inside the first member, against its own admin API (it follows the
# leader by itself); the token comes from the container's environment.
admin() {
    compose exec -T c1 /usr/local/bin/cairn admin --endpoint http://127.0.0.1:7301 "$@"
}
# Retries a command until it succeeds, for at most a minute.
retry() {
    local what=$1 out
    shift
    for _ in $(seq 120); do
        if out=$("$@" 2>&1); then
            printf '%s' "$out"
            return 0
        fi
        sleep 0.5
    done
    echo "gave up waiting for $what: $out" >&2
    return 1
}
# The key a service printed when it started (`gateway key:`, `member key:`).
printed_key() {
    compose logs --no-color "$1" | sed -n "s/.*$2 key: \([A-Za-z0-9]*\).*/\1/p" | head -n1 | grep .
}
# Whether at least $1 nodes have heartbeated to the leader.
nodes_heartbeating() {
    [ "$(admin --json nodes | grep -o '"last_heartbeat_ms": *[0-9]' | wc -l)" -ge "$1" ]
}
save() {
    printf 'export %s=%q\n' "$1" "$2" >>"$state"
    export "$1=$2"
}
endpoints() {
    echo "S3 endpoint: http://127.0.0.1:$CAIRN_S3_PORT_1"
    echo "S3 endpoint: http://127.0.0.1:$CAIRN_S3_PORT_2"
    echo "access key id: $CAIRN_ACCESS_KEY"
    echo "secret access key: $CAIRN_SECRET_KEY"
}

if [ -s "$state" ]; then
    # shellcheck disable=SC1090
    . "$state"
    compose up -d
    endpoints
    exit 0
fi

umask 077
: >"$state"
save CAIRN_ADMIN_TOKEN "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"

echo "starting the first coordinator member"
compose up -d c1
key=$(retry "the first member" admin --json status | sed -n 's/.*"coordinator_key": *"\([^"]*\)".*/\1/p')
[ -n "$key" ] || { echo "the first member's status named no coordinator key" >&2; exit 1; }
save CAIRN_COORDINATOR_KEY "$key"

echo "adding members 2 and 3"
compose up -d c2 c3
for i in 2 3; do
    member_key=$(retry "member $i's key" printed_key "c$i" member)
    retry "member $i" admin members add --id "$i" --key "$member_key" \
        --addr "$CAIRN_NET.1$i:7300" --admin "$CAIRN_NET.1$i:7301" >/dev/null
done

echo "inviting 8 storage nodes"
# Each invitation names the organisation its node is in (as docker-compose.yml declares).
orgs=(org-a org-a org-b org-b org-c org-c org-d org-d)
for n in $(seq 8); do
    save "CAIRN_JOIN_$n" "$(admin invite --org "${orgs[$((n - 1))]}" | tr -d '\r\n')"
done
compose up -d n1 n2 n3 n4 n5 n6 n7 n8

echo "registering the gateways"
compose up -d g1 g2
for g in 1 2; do
    gateway_key=$(retry "gateway $g's key" printed_key "g$g" gateway)
    admin gateway add "$gateway_key" --name "g$g" >/dev/null
done

echo "waiting for every node's first heartbeat"
retry "8 nodes heartbeating" nodes_heartbeating 8 >/dev/null

admin bucket create cache --public-read >/dev/null
credentials=$(admin --json key create --name compose)
save CAIRN_ACCESS_KEY "$(printf '%s' "$credentials" | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')"
save CAIRN_SECRET_KEY "$(printf '%s' "$credentials" | sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p')"
endpoints
