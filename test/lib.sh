# test/lib.sh: shell functions shared by test/run and test/demo.
#
# They install what is missing, build and install the extension, and start
# a throwaway PostgreSQL cluster with the worker and the mock API, all under
# one work directory, on a Unix socket and a loopback port of their own.
# Everything started is stopped by its PID.

# KLING_PG_VERSION picks the PostgreSQL major (test/matrix sets it in each
# Debian root); 15 is this machine's (bookworm's).
PG_VERSION_WANTED=${KLING_PG_VERSION:-15}
PG_BIN=/usr/lib/postgresql/$PG_VERSION_WANTED/bin
# Named, not found on the PATH: a root may hold more than one version.
PG_CONFIG=$PG_BIN/pg_config
export PG_CONFIG
PYTHON=/usr/bin/python3
PACKAGES="make gcc postgresql-$PG_VERSION_WANTED postgresql-server-dev-$PG_VERSION_WANTED
          libcurl4-openssl-dev postgresql-$PG_VERSION_WANTED-pgtap
          libtap-parser-sourcehandler-pgtap-perl libipc-run-perl python3 curl git"

log() { printf '== %s\n' "$*" >&2; }

# Install the Debian packages the build and the suites need, if any is missing.
kling_install_deps() {
    local missing=()
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    kling_apt_install "${missing[@]}"
}

# Install Debian packages (none: nothing to do).
kling_apt_install() {
    [ $# -eq 0 ] && return 0
    local sudo=
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "missing packages: $* (run as root, or install them)" >&2
            return 1
        }
        sudo=sudo
    fi
    log "installing $*"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    # The packaged cluster is not needed: the suites make their own.
    $sudo mkdir -p /etc/postgresql-common
    [ -f /etc/postgresql-common/createcluster.conf ] \
        || echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

# The unprivileged user that runs the servers: postgres when we are root.
kling_server_user() {
    if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi
}

# Run a command as the server user.
kling_as_server_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Make a work directory the server user owns, with a copy of the sources in
# $WORK/src (root's checkout may not be readable by that user).
kling_make_workdir() {
    local root=$1
    if [ "$(id -u)" -eq 0 ]; then
        WORK=$(mktemp -d /tmp/kling-test.XXXXXX)
    else
        mkdir -p "$root/build"
        WORK=$(mktemp -d "$root/build/run.XXXXXX")
    fi
    mkdir -p "$WORK/src"
    (cd "$root" && tar --exclude=./build --exclude=./.git -cf - .) | (cd "$WORK/src" && tar -xf -)
    [ "$(id -u)" -eq 0 ] && chown -R postgres "$WORK"
    chmod 755 "$WORK"
    export WORK
}

# Build the extension from $WORK/src and install it into a private copy of
# the server under $WORK/pg, never into the system's directories: the
# system's kling (if any) and other runs stay untouched.  PostgreSQL finds
# its share and library directories relative to its own binaries, so the
# copy's binaries load the copy's files.  Sets PG_BIN to the copy's.
# With KLING_DEB (a postgresql-N-kling .deb, see test/package) the copy gets
# the package's files instead of a build of the tree.
kling_build_install() {
    log "building the extension; installing it into a private copy of PostgreSQL"
    make -C "$WORK/src" -s clean >/dev/null
    [ -n "${KLING_DEB:-}" ] || make -C "$WORK/src" -s >/dev/null
    local root=$WORK/pg libroot sharedir
    libroot=$(dirname "$("$PG_CONFIG" --bindir)")
    sharedir=$("$PG_CONFIG" --sharedir)
    mkdir -p "$root$(dirname "$libroot")" "$root$(dirname "$sharedir")"
    cp -a "$libroot" "$root$libroot"
    cp -a "$sharedir" "$root$sharedir"
    rm -f "$root$sharedir"/extension/kling[-.]* "$root$libroot"/lib/kling.so
    if [ -n "${KLING_DEB:-}" ]; then
        dpkg-deb -x "$KLING_DEB" "$root"
    else
        make -C "$WORK/src" -s install DESTDIR="$root" >/dev/null
    fi
    PG_BIN=$root$libroot/bin
    # psql, createdb and pg_prove's psql: this version's, not the newest.
    PATH=$PG_BIN:$PATH
    export PG_BIN PATH
    [ "$(id -u)" -eq 0 ] && chown -R postgres "$WORK"
    return 0
}

# Start the mock API on a free loopback port; sets MOCK_URL and MOCK_PID.
kling_start_mock() {
    local dir=$WORK/mock
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    kling_as_server_user "$PYTHON" "$WORK/src/test/mock_api.py" --host 127.0.0.1 --port 0 \
        --port-file "$dir/port" --api-key "${MOCK_API_KEY:-test-key}" >"$dir/log" 2>&1 &
    MOCK_PID=$!
    for _ in $(seq 100); do
        [ -s "$dir/port" ] && break
        sleep 0.1
    done
    [ -s "$dir/port" ] || { cat "$dir/log" >&2; echo "mock API did not start" >&2; return 1; }
    MOCK_URL="http://127.0.0.1:$(cat "$dir/port")"
    export MOCK_URL MOCK_PID
}

# Start a cluster with the worker preloaded, serving a new database named by
# the first argument; extra settings come as lines on stdin.  The database is
# made before the worker starts, so it serves from the first moment.  Sets
# PGHOST, PGPORT, PGUSER, PGDATA.
kling_start_cluster() {
    local db=$1 dir=$WORK/cluster
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    export PGDATA=$dir/data PGHOST=$dir PGPORT=5499 PGUSER=$(kling_server_user)
    kling_as_server_user "$PG_BIN/initdb" -D "$PGDATA" -A trust -E UTF8 --no-locale >/dev/null
    {
        echo "listen_addresses = ''"
        echo "port = $PGPORT"
        echo "unix_socket_directories = '$dir'"
        echo "fsync = off"
    } | kling_as_server_user tee -a "$PGDATA/postgresql.conf" >/dev/null
    kling_as_server_user "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$dir/server.log" -w start >/dev/null
    kling_as_server_user createdb "$db"
    kling_as_server_user "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    {
        echo "shared_preload_libraries = 'kling'"
        echo "kling.database_name = '$db'"
        cat
    } | kling_as_server_user tee -a "$PGDATA/postgresql.conf" >/dev/null
    kling_as_server_user "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$dir/server.log" -w start >/dev/null
}

# Stop what kling_start_* started, by PID.
kling_stop_all() {
    if [ -n "${PGDATA:-}" ] && [ -f "$PGDATA/postmaster.pid" ]; then
        kling_as_server_user "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "${MOCK_PID:-}" ]; then
        # As root, MOCK_PID is runuser's; the mock is its child.
        kill $(pgrep -P "$MOCK_PID") "$MOCK_PID" 2>/dev/null || true
        wait "$MOCK_PID" 2>/dev/null || true
        MOCK_PID=
    fi
}
