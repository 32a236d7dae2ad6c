# Run by `cmake --install` and cpack (install(CODE) in install.cmake): writes the files whose
# text depends on the install prefix into REPEATERD_GEN_DIR, before the rules that install them.
#   repeaterd.service                   config/repeaterd.service.in, for CMAKE_INSTALL_PREFIX
#   repeaterd.8.gz, repeaterctl.8.gz    man/*.8.in with the version, compressed as Debian wants
# In: REPEATERD_SOURCE_DIR, REPEATERD_GEN_DIR, PROJECT_VERSION, REPEATERD_REL_<DIR> (the
# GNUInstallDirs relative dirs), CMAKE_INSTALL_PREFIX (set by the install).

# CMAKE_INSTALL_FULL_<DIR> for the prefix installed to, with GNUInstallDirs' special cases:
# under /usr (or /), /etc, /var and /run rather than /usr/etc, ...
set(prefix "${CMAKE_INSTALL_PREFIX}")
foreach(d BINDIR SBINDIR LIBEXECDIR SYSCONFDIR LOCALSTATEDIR RUNSTATEDIR LIBDIR DATADIR MANDIR DOCDIR)
  set(rel "${REPEATERD_REL_${d}}")
  if(IS_ABSOLUTE "${rel}")
    set(CMAKE_INSTALL_FULL_${d} "${rel}")
  elseif(d MATCHES "^(SYSCONFDIR|LOCALSTATEDIR|RUNSTATEDIR)$" AND prefix MATCHES "^/(usr/?)?$")
    set(CMAKE_INSTALL_FULL_${d} "/${rel}")
  else()
    string(REGEX REPLACE "/$" "" p "${prefix}")
    set(CMAKE_INSTALL_FULL_${d} "${p}/${rel}")
  endif()
endforeach()

# configure_file would turn an unknown @VAR@ into nothing: refuse instead.
set(unit_in "${REPEATERD_SOURCE_DIR}/config/repeaterd.service.in")
file(READ "${unit_in}" unit_text)
string(REGEX MATCHALL "@[A-Za-z_][A-Za-z0-9_]*@" unit_vars "${unit_text}")
foreach(v IN LISTS unit_vars)
  string(REPLACE "@" "" v "${v}")
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "${unit_in} uses @${v}@, which cmake/install_generated.cmake does not set")
  endif()
endforeach()
configure_file("${unit_in}" "${REPEATERD_GEN_DIR}/repeaterd.service" @ONLY)

find_program(GZIP gzip REQUIRED)
foreach(page repeaterd.8 repeaterctl.8)
  configure_file("${REPEATERD_SOURCE_DIR}/man/${page}.in" "${REPEATERD_GEN_DIR}/${page}" @ONLY)
  # -n: no name or time stamp in the header, so the same page compresses to the same bytes.
  execute_process(COMMAND "${GZIP}" -9n -c "${REPEATERD_GEN_DIR}/${page}"
                  OUTPUT_FILE "${REPEATERD_GEN_DIR}/${page}.gz" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "gzip ${REPEATERD_GEN_DIR}/${page} failed: ${rc}")
  endif()
endforeach()
