# Runs eca-nicmodel twice with every experiment, CSV and plots, and fails unless the two
# runs produce byte-identical output. Usage: cmake -DTOOL=... -DOUT=dir -P this-file
foreach(run 1 2)
  file(REMOVE_RECURSE ${OUT}/run${run})
  file(MAKE_DIRECTORY ${OUT}/run${run})
  execute_process(COMMAND ${TOOL} --experiment all --csv ${OUT}/run${run}/csv
                          --plot ${OUT}/run${run}/svg
                  OUTPUT_FILE ${OUT}/run${run}/stdout.txt RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "eca-nicmodel run ${run} failed: ${rc}")
  endif()
endforeach()
file(GLOB_RECURSE files RELATIVE ${OUT}/run1 ${OUT}/run1/*)
list(LENGTH files n)
if(n LESS 10)
  message(FATAL_ERROR "expected tables, CSV and SVG files; found ${n} files")
endif()
foreach(f ${files})
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${OUT}/run1/${f} ${OUT}/run2/${f}
                  RESULT_VARIABLE diff)
  if(NOT diff EQUAL 0)
    message(FATAL_ERROR "output differs between runs: ${f}")
  endif()
endforeach()
message(STATUS "${n} output files identical across two runs")
