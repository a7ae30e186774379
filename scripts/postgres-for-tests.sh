#!/bin/sh
# Starts Debian's PostgreSQL cluster for the tests (creating it if the package made none), makes
# the role the tests log in as, and prints the URL they use. Messages go to stderr.
set -eu
ROLE=storyloom
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
as_postgres() { if [ -z "$SUDO" ]; then su postgres -s /bin/sh -c "$1"; else sudo -u postgres sh -c "$1"; fi; }

version=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
if [ -z "$version" ]; then
    echo "PostgreSQL is not installed: apt-get install postgresql" >&2
    exit 1
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
    echo "creating the PostgreSQL $version cluster" >&2
    $SUDO pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
    echo "starting PostgreSQL $version" >&2
    $SUDO pg_ctlcluster "$version" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
as_postgres "psql -p $port -v ON_ERROR_STOP=1 -q" >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$ROLE';
  END IF;
END \$\$;
SQL
echo "postgresql+psycopg://$ROLE:$ROLE@127.0.0.1:$port/postgres"
