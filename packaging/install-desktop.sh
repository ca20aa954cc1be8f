#!/bin/sh
# Install (or with --uninstall remove) the polypviewer menu entry and icons for the current user.
# Usage: packaging/install-desktop.sh [BUNDLE_DIR]   (default: dist/polypviewer beside this script)
# Puts a `polypviewer` link in ~/.local/bin, the icons in ~/.local/share/icons/hicolor/ and the
# .desktop entry in ~/.local/share/applications/ (the XDG user locations; no root needed).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
DATA=${XDG_DATA_HOME:-$HOME/.local/share}
BIN=$HOME/.local/bin
SIZES="16 22 24 32 48 64 128 256 512"

if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$DATA/applications/polypviewer.desktop" "$BIN/polypviewer" "$DATA/icons/hicolor/scalable/apps/polypviewer.svg"
    for s in $SIZES; do rm -f "$DATA/icons/hicolor/${s}x${s}/apps/polypviewer.png"; done
else
    BUNDLE=$(cd "${1:-$ROOT/dist/polypviewer}" && pwd)
    [ -x "$BUNDLE/polypviewer" ] || { echo "install-desktop.sh: error: $BUNDLE/polypviewer not found (run make package)" >&2; exit 2; }
    mkdir -p "$BIN" "$DATA/applications" "$DATA/icons/hicolor/scalable/apps"
    ln -sf "$BUNDLE/polypviewer" "$BIN/polypviewer"
    ICONS=$BUNDLE/_internal/polypviewer/resources/icons
    for s in $SIZES; do
        mkdir -p "$DATA/icons/hicolor/${s}x${s}/apps"
        cp "$ICONS/polypviewer-$s.png" "$DATA/icons/hicolor/${s}x${s}/apps/polypviewer.png"
    done
    cp "$ICONS/polypviewer.svg" "$DATA/icons/hicolor/scalable/apps/polypviewer.svg"
    # Exec with the absolute path, so the menu entry works even when ~/.local/bin is not on PATH.
    sed -e "s|^Exec=polypviewer|Exec=$BUNDLE/polypviewer|" -e "s|^TryExec=polypviewer|TryExec=$BUNDLE/polypviewer|" \
        "$HERE/polypviewer.desktop" > "$DATA/applications/polypviewer.desktop"
    echo "installed: $DATA/applications/polypviewer.desktop, icons, $BIN/polypviewer -> $BUNDLE/polypviewer"
fi
# Refresh the menu and icon caches where the tools exist (harmless if they do not).
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$DATA/applications" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$DATA/icons/hicolor" || true
