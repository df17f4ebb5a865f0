# Sourced by build_images.sh and build_prometheus_image.sh (they define `die`).
# download_debs PACKAGE DIR: PACKAGE and its whole dependency closure as .deb files in DIR,
# with a flat repository index (DIR/Packages) that apt inside the offline build reads.
download_debs() {
    local package=$1 dir=$2 packages deb
    rm -rf "$dir"
    mkdir -p "$dir"
    # Real packages only (virtual ones print as <name>; their providers are listed too).
    mapfile -t packages < <(apt-cache depends --recurse --no-recommends --no-suggests \
        --no-conflicts --no-breaks --no-replaces --no-enhances "$package" \
        | grep -E '^[a-z0-9]' | sort -u)
    (cd "$dir" && apt-get download -qq "${packages[@]}" >/dev/null) \
        || die "apt-get download of $package and its dependencies failed (mirror reachable?)"
    # The flat repository's index: each package's control fields plus where and what.
    for deb in "$dir"/*.deb; do
        dpkg-deb -f "$deb"
        printf 'Filename: ./%s\nSize: %s\nSHA256: %s\n\n' "$(basename "$deb")" \
            "$(stat -c %s "$deb")" "$(sha256sum "$deb" | cut -d' ' -f1)"
    done >"$dir/Packages"
}
