# install + export, so another CMake project can find_package(uel).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(DIRECTORY include/uel DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS uel RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
set(UEL_EXPORTED ${UEL_LIBRARIES} uel_options uel_torch)
if(TARGET uel_nccl)
  list(APPEND UEL_EXPORTED uel_nccl)
endif()
install(TARGETS ${UEL_EXPORTED}
  EXPORT uelTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT uelTargets NAMESPACE uel:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/uel)
configure_package_config_file(cmake/uelConfig.cmake.in
  "${CMAKE_CURRENT_BINARY_DIR}/uelConfig.cmake"
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/uel)
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/uelConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/uelConfig.cmake"
  "${CMAKE_CURRENT_BINARY_DIR}/uelConfigVersion.cmake"
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/uel)
