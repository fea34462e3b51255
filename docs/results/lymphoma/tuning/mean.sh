#!/bin/bash
# The features' mean instead of eq. 1's attention weights (--aggregate mean): with replacement, eq. 1 counts a
# cell drawn k times as k a_i, so a peaked attention classifies by its one heaviest patch; the mean counts each
# draw once. Resumable: run it again. Usage: mean.sh SEED
exec "$(dirname "$0")/setting300.sh" mean "$1" --aggregate mean
