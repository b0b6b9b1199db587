# SPDX-License-Identifier: MIT
# tools/xway-run: the launcher script (nothing to build).
INSTALL_BIN += tools/xway-run
