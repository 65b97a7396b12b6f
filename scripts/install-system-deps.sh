#!/bin/sh
# Debian packages the tests need: Icarus Verilog and Verilator run the exported Verilog; OpenSTA (package
# opensta, binary sta) times the netlists mapped to standard cells.
set -e
missing=""
command -v iverilog >/dev/null 2>&1 || missing="$missing iverilog"
command -v verilator >/dev/null 2>&1 || missing="$missing verilator"
command -v sta >/dev/null 2>&1 || missing="$missing opensta"
[ -z "$missing" ] && exit 0
echo "installing Debian packages:$missing"
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
