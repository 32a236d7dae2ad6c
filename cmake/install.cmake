# What `cmake --install` puts where; the Debian package (packaging.cmake) is made from the same
# rules, installed with the prefix /usr.
#
#   bin/                          repeaterd, repeaterctl
#   lib/systemd/system/           repeaterd.service
#   lib/sysusers.d/, tmpfiles.d/  the repeaterd user; /var/lib/repeaterd and /var/log/repeaterd
#   share/man/man8/               repeaterd(8), repeaterctl(8)
#   share/doc/repeaterd/          README.md, docs/, LICENSE, examples/example.yaml
#   ${REPEATERD_SYSCONFDIR}/      repeaterd/repeaterd.yaml, repeaterd/environment and
#                                 logrotate.d/repeaterd, each only when not there yet: an
#                                 install never overwrites an admin's configuration
#
# The unit and the man pages are generated at install time (install_generated.cmake), for the
# prefix actually installed to: cpack installs with the prefix /usr whatever prefix the build
# tree was configured with, and the unit must name the binary where the package puts it.

# The unit reads /etc/repeaterd whatever the prefix, so the configuration goes there too.
set(REPEATERD_SYSCONFDIR /etc CACHE PATH
  "where repeaterd/repeaterd.yaml, repeaterd/environment and logrotate.d/repeaterd are installed")

install(TARGETS repeaterd repeaterctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# The unit as the build tree's prefix names it (for systemd-analyze verify and the like).
configure_file(config/repeaterd.service.in ${PROJECT_BINARY_DIR}/repeaterd.service @ONLY)

set(gen ${PROJECT_BINARY_DIR}/install-generated)
set(dirs)
foreach(d BINDIR SBINDIR LIBEXECDIR SYSCONFDIR LOCALSTATEDIR RUNSTATEDIR LIBDIR DATADIR MANDIR DOCDIR)
  string(APPEND dirs "set(REPEATERD_REL_${d} [[${CMAKE_INSTALL_${d}}]])\n")
endforeach()
install(CODE "
  set(REPEATERD_SOURCE_DIR [[${PROJECT_SOURCE_DIR}]])
  set(REPEATERD_GEN_DIR [[${gen}]])
  set(PROJECT_VERSION [[${PROJECT_VERSION}]])
  ${dirs}
  include([[${PROJECT_SOURCE_DIR}/cmake/install_generated.cmake]])
")
install(FILES ${gen}/repeaterd.service DESTINATION lib/systemd/system)
install(FILES ${gen}/repeaterd.8.gz ${gen}/repeaterctl.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)

install(FILES config/repeaterd.sysusers DESTINATION lib/sysusers.d RENAME repeaterd.conf)
install(FILES config/repeaterd.tmpfiles DESTINATION lib/tmpfiles.d RENAME repeaterd.conf)

install(FILES README.md LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR})
file(GLOB doc_pages CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/*.md)
install(FILES ${doc_pages} DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs)
install(FILES config/example.yaml DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

# Configuration files: kept when present (a package manager's conffile handling does the
# rest); the environment file holds secrets, so only root reads it.
set(REPEATERD_CONFFILES
  ${REPEATERD_SYSCONFDIR}/repeaterd/repeaterd.yaml
  ${REPEATERD_SYSCONFDIR}/repeaterd/environment
  ${REPEATERD_SYSCONFDIR}/logrotate.d/repeaterd)
install(CODE "
  function(repeaterd_install_config src dest_dir name mode)
    set(dest \"\$ENV{DESTDIR}\${dest_dir}/\${name}\")
    if(EXISTS \"\${dest}\")
      message(STATUS \"Keeping: \${dest} (an installed configuration is never overwritten)\")
      return()
    endif()
    # file(INSTALL) adds DESTDIR itself.
    file(INSTALL \"\${src}\" DESTINATION \"\${dest_dir}\" RENAME \"\${name}\"
         FILE_PERMISSIONS \${mode})
  endfunction()
  repeaterd_install_config([[${PROJECT_SOURCE_DIR}/config/repeaterd.yaml]]
    [[${REPEATERD_SYSCONFDIR}/repeaterd]] repeaterd.yaml \"OWNER_READ;OWNER_WRITE;GROUP_READ;WORLD_READ\")
  repeaterd_install_config([[${PROJECT_SOURCE_DIR}/config/repeaterd.environment]]
    [[${REPEATERD_SYSCONFDIR}/repeaterd]] environment \"OWNER_READ;OWNER_WRITE\")
  repeaterd_install_config([[${PROJECT_SOURCE_DIR}/config/repeaterd.logrotate]]
    [[${REPEATERD_SYSCONFDIR}/logrotate.d]] repeaterd \"OWNER_READ;OWNER_WRITE;GROUP_READ;WORLD_READ\")
")
