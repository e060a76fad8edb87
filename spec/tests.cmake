# spec/tests.cmake: ctest registrations. C tests are one executable per
# spec/c/test_*.c; every spec/*_spec.lua runs under busted inside the
# launcher (so specs load the library exactly as users do). Specs that need
# a GPU skip themselves with a visible reason on machines without one;
# DQ_DEVICE=cuda makes device specs run on the GPU.

file(GLOB DQ_C_TESTS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/spec/c/test_*.c)
foreach(src ${DQ_C_TESTS})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/engine ${PROJECT_SOURCE_DIR}/spec/c)
  target_compile_options(${name} PRIVATE ${DQ_WARNINGS})
  target_compile_definitions(${name} PRIVATE _GNU_SOURCE DQ_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  target_link_libraries(${name} PRIVATE dqbart_static m)
  add_test(NAME c_${name} COMMAND ${name})
endforeach()

# A busted spec file run inside the launcher as test NAME, with extra
# environment settings (a list of VAR=value) beside DQ_SPEC_BUILD_DIR.
function(dq_add_spec_test name spec)
  add_test(NAME ${name}
    COMMAND $<TARGET_FILE:dqbart_launcher> ${PROJECT_SOURCE_DIR}/spec/busted.lua
            --output=plainTerminal ${spec}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set(env DQ_SPEC_BUILD_DIR=${PROJECT_BINARY_DIR} ${ARGN})
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "${env}")
endfunction()

file(GLOB DQ_LUA_SPECS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/spec/*_spec.lua)
foreach(spec ${DQ_LUA_SPECS})
  get_filename_component(name ${spec} NAME_WE)
  dq_add_spec_test(lua_${name} ${spec})
endforeach()

# The launcher finds its Lua modules and library after `cmake --install`.
add_test(NAME install_tree
  COMMAND sh -c "rm -rf \"$1\" && ${CMAKE_COMMAND} --install \"$2\" --prefix \"$1\" >/dev/null && \"$1/bin/dqbart\" -e 'print(dq.zeros(2, 3):nelement())' | grep -qx 6"
          install_tree ${PROJECT_BINARY_DIR}/install-test ${PROJECT_BINARY_DIR})

# The specs that compare CUDA with the CPU or transformers, run with the CPU
# on both sides (DQ_CUDA_SPEC_DEVICE=cpu): on machines without a GPU this
# still checks the comparisons' own code, which otherwise runs only on the
# GPU host.
set(DQ_CUDA_COMPARISON_SPECS bart cuda_ops loss quant)
foreach(name ${DQ_CUDA_COMPARISON_SPECS})
  dq_add_spec_test(cpu_dry_run_${name}_spec ${PROJECT_SOURCE_DIR}/spec/${name}_spec.lua DQ_CUDA_SPEC_DEVICE=cpu)
endforeach()
