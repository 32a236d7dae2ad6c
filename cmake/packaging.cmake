# The Debian package: `cmake --build build --target package`, or `cd build && cpack -G DEB`,
# makes build/repeaterd_<version>-1_<arch>.deb from the install rules (install.cmake) with the
# prefix /usr. Building it needs dpkg-dev (dpkg-shlibdeps); scripts/deps.sh --test installs it.
#
# Its maintainer scripts (packaging/) create the repeaterd user (sysusers.d) and its state and
# log directories (tmpfiles.d), and never enable or start the service: the admin configures
# /etc/repeaterd first. tests/integration/test_package.py builds it, installs it into a
# scratch root with dpkg --root, and checks the result.

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME repeaterd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "repeaterd maintainers <maintainers@users.noreply.h-seed-7df8016d.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "durable form and case forwarding (a CommCare-style repeater)")
set(CPACK_PACKAGE_DESCRIPTION [[
repeaterd receives form and case submissions from CommCare, ODK or Kobo-style clients, keeps
each in a durable SQLite queue with one repeat record per destination, and forwards them over
HTTP(S) with exponential backoff, emailing the destination's contacts when records fail. It
runs as a systemd service. repeaterctl shows the queue and resends, cancels or requeues records.]])
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# The build tree's binaries carry debug info (RelWithDebInfo); the package does not need it.
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends: dpkg-shlibdeps derives the libraries (libssl3, libsqlite3-0, libyaml-cpp0.7,
# libboost-url1.81.0, libprometheus-cpp-core1.0, ...) with the versions the binaries need,
# from what they actually link, so the list cannot go stale as the code changes. systemd is
# added by hand: the unit is Type=notify, and the maintainer scripts run systemd-sysusers and
# systemd-tmpfiles.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "systemd")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "logrotate")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "sqlite3")

# The configuration files (install.cmake's REPEATERD_CONFFILES) are conffiles: an upgrade
# keeps the admin's edits, and a purge removes them.
string(JOIN "\n" conffiles ${REPEATERD_CONFFILES})
file(WRITE ${PROJECT_BINARY_DIR}/packaging/conffiles "${conffiles}\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${PROJECT_BINARY_DIR}/packaging/conffiles
  ${PROJECT_SOURCE_DIR}/packaging/postinst
  ${PROJECT_SOURCE_DIR}/packaging/prerm
  ${PROJECT_SOURCE_DIR}/packaging/postrm)
# Scripts 0755, conffiles 0644, whatever the checkout's modes.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# `make package_source`, should anyone run it: the sources, not the build trees.
set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "/var/" "/node_modules/" "__pycache__")

include(CPack)
