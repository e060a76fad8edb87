# make_cdef.cmake: turn engine/dqbart.h into a Lua module returning the
# declarations for ffi.cdef. Run with -DCC=... -DHEADER=... -DOUT=...
# -DDQ_FFI_CDEF drops the system includes and attributes; -P drops line
# markers; comments disappear in preprocessing.
execute_process(
  COMMAND ${CC} -E -P -nostdinc -DDQ_FFI_CDEF ${HEADER}
  OUTPUT_VARIABLE decls
  ERROR_VARIABLE errors
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "preprocessing ${HEADER} failed:\n${errors}")
endif()
string(REGEX REPLACE "\n[ \t]*\n+" "\n" decls "${decls}")
file(WRITE ${OUT}.tmp "-- Generated from engine/dqbart.h at build time; do not edit.\nreturn [==[\n${decls}]==]\n")
file(RENAME ${OUT}.tmp ${OUT})
