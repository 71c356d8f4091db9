# DistriProc build. One binary (distriproc) over a static library (libdistriproc.a).
# Sources are picked up by wildcard so a new module needs no Makefile edit:
#   lib/*.c            -> libdistriproc.a   (modules, one concern each)
#   src/*.c            -> distriproc        (main + one file per subcommand)
#   tools/*.c          -> one binary each   (workloads such as memwalk)
#   tests/unit/test_*.c-> one cmocka runner each
#   fuzz/fuzz_*.c      -> one libFuzzer target each (clang)
#   tests/helpers/*.c  -> test drivers linked with the library

CC       ?= gcc
BUILD    ?= build
OPT      ?= -O2
CFLAGS   := -std=gnu11 -Wall -Wextra -Werror $(OPT) -g -D_GNU_SOURCE -Ilib $(EXTRA_CFLAGS)
LDFLAGS  := $(EXTRA_LDFLAGS)
LDLIBS   := -lsodium -ljansson -lssl -lcrypto -lhiredis -lpthread -lm

LIB_SRCS  := $(wildcard lib/*.c)
CMD_SRCS  := $(wildcard src/*.c)
TOOL_SRCS := $(wildcard tools/*.c)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
FUZZ_SRCS := $(wildcard fuzz/fuzz_*.c)
HELPER_SRCS := $(wildcard tests/helpers/*.c)

LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CMD_OBJS  := $(CMD_SRCS:%.c=$(BUILD)/%.o)
TOOLS     := $(TOOL_SRCS:tools/%.c=$(BUILD)/%)
UNITS     := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
HELPERS   := $(HELPER_SRCS:tests/helpers/%.c=$(BUILD)/tests/helpers/%)
LIB       := $(BUILD)/libdistriproc.a
BIN       := $(BUILD)/distriproc

ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
PYTEST     := /usr/bin/python3 -m pytest

.PHONY: all deps deps-ml deps-pkg rootfs asan unit unit-asan test integration fuzz clean demo man install uninstall deb
all: $(BIN) $(TOOLS) $(HELPERS)

deps:
	@scripts/deps.sh

# The container workloads' root filesystem (PostgreSQL 15, NGINX, Redis from
# Debian 12 packages, built with mmdebstrap, cached under .deps/rootfs/<key>;
# ~1 min and ~800 MB the first time, nothing after). tests/integration/
# test_containers.py needs it.
rootfs: deps
	@scripts/rootfs.sh

# Optional: PyTorch for the ML inference workload (tools/ml_infer.py); ~640 MB.
deps-ml:
	@DEPS_ML=1 scripts/deps.sh

# Debian packaging tools (debhelper; dpkg-dev and fakeroot come with the build
# tools): only for `make deb` / dpkg-buildpackage.
deps-pkg:
	@DEPS_PKG=1 scripts/deps.sh

$(BUILD)/%.o: %.c $(wildcard lib/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN): $(CMD_OBJS) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CMD_OBJS) $(LIB) $(LDLIBS)

# Workloads link nothing of ours: they are what gets checkpointed.
$(BUILD)/%: tools/%.c $(wildcard tools/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lpthread -lm

$(BUILD)/tests/%: tests/unit/%.c $(LIB) $(wildcard tests/unit/*.h) $(wildcard tools/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -Itests/unit -o $@ $< $(LIB) $(LDLIBS) -lcmocka

$(BUILD)/tests/helpers/%: tests/helpers/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

unit: $(UNITS)
	@scripts/run-unit.sh $(UNITS)

asan:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 EXTRA_CFLAGS="$(ASAN_FLAGS)" EXTRA_LDFLAGS="$(ASAN_FLAGS)" all

unit-asan:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 EXTRA_CFLAGS="$(ASAN_FLAGS)" EXTRA_LDFLAGS="$(ASAN_FLAGS)" unit

integration: all
	$(PYTEST) -v tests/integration

# The README's test command: installs what it needs, builds, then runs every test.
test: deps deps-pkg rootfs
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit-asan
	@echo "every fuzz target for $(FUZZ_CI_SECONDS) s on its seeds (fuzz/seeds; longer: make fuzz FUZZ_SECONDS=N):"
	@scripts/fuzz.sh $(FUZZ_CI_SECONDS) $(FUZZ_SRCS)
	@$(MAKE) --no-print-directory asan
	@echo "page server protocol and secure channel tests against the ASan/UBSan build:"
	DISTRIPROC_BIN=$(CURDIR)/build-asan/distriproc $(PYTEST) -q tests/integration/test_pageserver.py \
		tests/integration/test_secure.py tests/integration/test_fence.py -k "not restore"
	@echo "budget, inject and guard tests (marker asan) against the ASan/UBSan build; any sanitizer report fails:"
	@rm -rf build-asan/sanitizer && mkdir -p build-asan/sanitizer
	DISTRIPROC_BIN=$(CURDIR)/build-asan/distriproc DISTRIPROC_SANITIZER_DIR=$(CURDIR)/build-asan/sanitizer \
	ASAN_OPTIONS=log_path=$(CURDIR)/build-asan/sanitizer/asan \
	UBSAN_OPTIONS=log_path=$(CURDIR)/build-asan/sanitizer/ubsan:print_stacktrace=1 \
	$(PYTEST) -q -m asan tests/integration/test_budget.py tests/integration/test_inject.py tests/integration/test_guard.py
	$(PYTEST) -v --durations=25 tests/integration

# The README's main command: Redis with 1 GiB migrated lazily across the lab.
demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

# ---- Installation (docs/operations.md) ---------------------------------------
# Manual pages and bash completion are generated from the binary's own --help
# (scripts/gen-docs.py), so they cannot drift from it.
VERSION ?= $(shell dpkg-parsechangelog -S Version 2>/dev/null | sed 's/-[^-]*$$//')
PREFIX  ?= /usr/local
DESTDIR ?=
MAN_STAMP := $(BUILD)/man/.stamp

man: $(MAN_STAMP)
$(MAN_STAMP): $(BIN) scripts/gen-docs.py
	@mkdir -p $(BUILD)/man
	python3 scripts/gen-docs.py --bin $(BIN) --man-dir $(BUILD)/man --completion $(BUILD)/completion/distriproc --version "$(VERSION)"
	@touch $@

# Binary, its CRIU (copied from .deps: make deps first), manual pages, docs,
# bash completion, systemd unit templates; PREFIX/lib/distriproc/install-manifest
# lists them for uninstall.
install: $(BIN) $(MAN_STAMP)
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" BUILD="$(BUILD)" $(if $(SYSTEMD_UNIT_DIR),SYSTEMD_UNIT_DIR="$(SYSTEMD_UNIT_DIR)") scripts/install.sh install

uninstall:
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" $(if $(SYSTEMD_UNIT_DIR),SYSTEMD_UNIT_DIR="$(SYSTEMD_UNIT_DIR)") scripts/install.sh uninstall

# The Debian package (debian/): ../distriproc_$(VERSION)-*_amd64.deb.
deb:
	dpkg-buildpackage -us -uc -b

# make fuzz: each target FUZZ_SECONDS on its corpus (build-fuzz/corpus, grown
# from fuzz/seeds); make test runs each FUZZ_CI_SECONDS, two at a time.
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 12
fuzz:
	@scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_SRCS)

clean:
	rm -rf build build-asan build-fuzz
