# test/citus/lib.sh: shell functions for the Citus cluster tests, sourced
# after test/lib.sh (they use its PG_CONFIG and log).
#
# kling_citus_build            build Citus (test/citus/build) or find it in
#                              the cache; sets CITUS_STAGE
# kling_citus_install_into R   overlay the staged Citus onto the private copy
#                              of PostgreSQL rooted at R (test/lib.sh's
#                              $WORK/pg), as kling_build_install overlays a
#                              .deb with dpkg-deb -x

KLING_CITUS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

kling_citus_build() {
    CITUS_STAGE=$("$KLING_CITUS_DIR/build" | tail -n 1)
    [ -d "$CITUS_STAGE" ] || { echo "test/citus/build gave no stage" >&2; return 1; }
    export CITUS_STAGE
}

# The stage mirrors the system's paths (make install DESTDIR=stage), and
# the private copy mirrors them under its root (cp -a of the system's
# directories), so the overlay is a copy of the library directory's and
# the extension directory's Citus files to the same paths under the root:
# lib/citus*.so and lib/citus_decoders/, extension/citus* and the old
# columnar upgrade scripts.  Not the headers, nor bitcode (none is built).
kling_citus_install_into() {
    local root=$1 stage=${2:-${CITUS_STAGE:-}} pkglibdir sharedir f
    [ -n "$stage" ] && [ -d "$stage" ] || { echo "kling_citus_install_into: no stage (run kling_citus_build)" >&2; return 1; }
    pkglibdir=$("$PG_CONFIG" --pkglibdir)
    sharedir=$("$PG_CONFIG" --sharedir)
    [ -d "$root$pkglibdir" ] && [ -d "$root$sharedir/extension" ] \
        || { echo "kling_citus_install_into: $root is not a private copy of $("$PG_CONFIG" --version)" >&2; return 1; }
    [ -f "$stage$pkglibdir/citus.so" ] \
        || { echo "kling_citus_install_into: $stage has no $pkglibdir/citus.so (built for another PostgreSQL?)" >&2; return 1; }
    log "overlaying Citus from $stage onto $root"
    for f in "$stage$pkglibdir"/citus*; do
        cp -a "$f" "$root$pkglibdir/"
    done
    for f in "$stage$sharedir"/extension/citus* "$stage$sharedir"/extension/columnar*; do
        [ -e "$f" ] || continue
        cp -a "$f" "$root$sharedir/extension/"
    done
    [ "$(id -u)" -eq 0 ] && [ -n "${WORK:-}" ] && [ "${root#"$WORK"/}" != "$root" ] && chown -R postgres "$root"
    return 0
}
