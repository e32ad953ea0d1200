# Runs at build time so the compiled-in sha follows the checkout without re-configuring.
# Inputs: SOURCE_DIR, INPUT, OUTPUT, UEL_VERSION.
execute_process(
  COMMAND git -C "${SOURCE_DIR}" rev-parse --short=12 HEAD
  OUTPUT_VARIABLE UEL_GIT_SHA OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR UEL_GIT_SHA STREQUAL "")
  set(UEL_GIT_SHA "unknown")
else()
  execute_process(
    COMMAND git -C "${SOURCE_DIR}" status --porcelain --untracked-files=no
    OUTPUT_VARIABLE dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(NOT dirty STREQUAL "")
    set(UEL_GIT_SHA "${UEL_GIT_SHA}-dirty")
  endif()
endif()
configure_file("${INPUT}" "${OUTPUT}.new" @ONLY)
# Only touch the output when the sha changed, so nothing rebuilds needlessly.
file(READ "${OUTPUT}.new" new_text)
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old_text)
else()
  set(old_text "")
endif()
if(NOT new_text STREQUAL old_text)
  file(RENAME "${OUTPUT}.new" "${OUTPUT}")
else()
  file(REMOVE "${OUTPUT}.new")
endif()
