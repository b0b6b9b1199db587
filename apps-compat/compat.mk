# SPDX-License-Identifier: MIT
# apps-compat: real applications, unmodified, under the shim (see
# docs/COMPAT.md).  `make compat` installs the application packages if
# missing, builds everything, and runs apps-compat/run-all.sh; set
# XWAY_COMPAT_MODE=plain to run without the shim, COMPAT_APPS="ssh mysql" to
# run only some cases.  Not part of `make test`: it needs root and installs
# packages.
COMPAT_APPS ?=

compat: build-all
	$(Q)./tools/install-deps.sh compat
	$(Q)B=$(B) apps-compat/run-all.sh $(COMPAT_APPS)

# The acceleration checker's own test (fixtures, no root, no network).
TEST_SCRIPTS += apps-compat/lib/test-check-accel.sh
