#!/bin/sh
# Puts the pip-installed CUDA libraries on the loader path, then runs spe.
. /etc/spe-cuda-env
export LD_LIBRARY_PATH
exec spe "$@"
