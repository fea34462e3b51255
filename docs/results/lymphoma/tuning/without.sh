#!/bin/bash
# Sampling without replacement (each look of 20 cells holds 20 distinct cells): does it keep the attention
# from spending its patches on copies of one cell, and does it classify better? Made with eq. 1's classifier
# (the default then). Resumable: run it again. Usage: without.sh SEED
exec "$(dirname "$0")/setting300.sh" without "$1" --sampling without --aggregate attention
