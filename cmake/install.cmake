# cmake/install.cmake -- what `cmake --install` puts under the prefix: sfa.h,
# libsfa.so.MAJOR (+ the bundled liblua5.4.so.0 in <libdir>/sfa), libsfa.a,
# the tools, the shipped tuning tables (<datadir>/sfa/tuned), the CMake package (find_package(sfa CONFIG): sfa::sfa, the shared
# library; sfa::sfa_static) and sfa.pc for pkg-config.
include(CMakePackageConfigHelpers)

install(FILES ${PROJECT_SOURCE_DIR}/include/sfa.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(_sfa_libs sfa)
if(TARGET sfa_shared)
  list(APPEND _sfa_libs sfa_shared)
  if(SFA_BUNDLE_LUA)
    install(FILES ${SFA_BUNDLED_LUA} DESTINATION ${CMAKE_INSTALL_LIBDIR}/sfa)
  endif()
endif()
install(TARGETS ${_sfa_libs} EXPORT sfaTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(SFA_BUILD_TOOLS)
  install(TARGETS sfa-gen sfa-cache sfa-tune RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
# the tuning tables measured on GPUs we had (sfa-tune --import them)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/cache/tuned/ DESTINATION ${CMAKE_INSTALL_DATADIR}/sfa/tuned
        FILES_MATCHING PATTERN "*.tsv")

set(SFA_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/sfa)
install(EXPORT sfaTargets NAMESPACE sfa:: DESTINATION ${SFA_CMAKE_DIR})
get_filename_component(SFA_LUA_STATIC_DIR ${LUA_STATIC} DIRECTORY)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/sfaConfig.cmake.in
  ${PROJECT_BINARY_DIR}/sfaConfig.cmake INSTALL_DESTINATION ${SFA_CMAKE_DIR})
# 0.x: a minor release may change the ABI, so only the same minor matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/sfaConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/sfaConfig.cmake ${PROJECT_BINARY_DIR}/sfaConfigVersion.cmake
        DESTINATION ${SFA_CMAKE_DIR})

# sfa.pc is relocatable: its prefix is found from where the file lies
# (${pcfiledir}), so `cmake --install --prefix P` works for any P.
file(RELATIVE_PATH SFA_PC_TO_PREFIX /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" SFA_PC_TO_PREFIX "${SFA_PC_TO_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/sfa.pc.in ${PROJECT_BINARY_DIR}/sfa.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/sfa.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
