# SPDX-License-Identifier: MIT
# xway top-level build.  Each component keeps its rules in its own fragment
# (shim/shim.mk, broker/broker.mk, tools/tools.mk, tests/tests.mk,
# apps-compat/compat.mk); this file holds flags, the shared targets and the
# install layout.
#
#   make            build libxway.so, xwayd, xwayctl and the tools
#   make test       run every test (Criterion unit tests + integration)
#   make asan       the same tests built with ASan and UBSan
#   make bench      benchmarks, ratios against kernel TCP in the same run
#   make compat     the real applications under the shim (apps-compat/)
#   make test-xen   the Xen test bed (QEMU + Xen + two PV domUs)
#   make install    PREFIX=/usr/local DESTDIR=

PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
SBINDIR  ?= $(PREFIX)/sbin
LIBDIR   ?= $(PREFIX)/lib
LIBEXECDIR ?= $(PREFIX)/libexec/xway
SYSCONFDIR ?= /etc
UNITDIR  ?= $(PREFIX)/lib/systemd/system
DESTDIR  ?=

CC       ?= cc
CFLAGS   ?= -O2 -g
B        ?= build

XCFLAGS  := $(CFLAGS) -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror \
            -MMD -MP -Iinclude -fno-strict-aliasing
XLDFLAGS := $(LDFLAGS)
ifeq ($(SAN),1)
XCFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=undefined -DXWAY_SANITIZED=1
XLDFLAGS += -fsanitize=address,undefined
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

GLIB_CFLAGS  := $(shell pkg-config --cflags glib-2.0 gio-unix-2.0 2>/dev/null)
GLIB_LIBS    := $(shell pkg-config --libs glib-2.0 gio-unix-2.0 2>/dev/null)
CRIT_CFLAGS  := $(shell pkg-config --cflags criterion 2>/dev/null)
CRIT_LIBS    := $(shell pkg-config --libs criterion 2>/dev/null || echo -lcriterion)

# Filled in by the fragments.
ALL_BINS :=
TEST_BINS :=        # Criterion test programs, run by tests/run.sh
TEST_SCRIPTS :=     # integration test scripts, run by tests/run.sh
BENCH_BINS :=
INSTALL_BIN :=
INSTALL_SBIN :=
INSTALL_LIB :=

.PHONY: all test asan bench compat test-xen install clean deps
all: build-all

# The channel layer first: other fragments name $(CHAN_OBJS) as prerequisites.
include shim/chan/chan.mk
include shim/shim.mk
include broker/broker.mk
include $(sort $(wildcard tools/*.mk tools/*/*.mk))
include $(sort $(wildcard tests/*.mk))
-include apps-compat/compat.mk

build-all: $(ALL_BINS)

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(XCFLAGS) $(OBJ_CFLAGS) -c -o $@ $<

test: build-all $(TEST_BINS)
	$(Q)B=$(B) tests/run.sh $(TEST_BINS) -- $(TEST_SCRIPTS)

asan:
	$(Q)$(MAKE) --no-print-directory B=build-asan SAN=1 test

deps:
	$(Q)./tools/install-deps.sh

install: build-all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR) \
	          $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/xway
	$(if $(INSTALL_BIN),install -m 0755 $(INSTALL_BIN) $(DESTDIR)$(BINDIR)/)
	$(if $(INSTALL_SBIN),install -m 0755 $(INSTALL_SBIN) $(DESTDIR)$(SBINDIR)/)
	$(if $(INSTALL_LIB),install -m 0644 $(INSTALL_LIB) $(DESTDIR)$(LIBDIR)/)
	$(INSTALL_EXTRA)

clean:
	rm -rf build build-asan

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# The README's main job: broker + server + client under the shim, verdict and speed-up.
.PHONY: demo
demo: build-all
	$(Q)B=$(B) tools/demo.sh
