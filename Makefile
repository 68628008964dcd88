# gensendrep — plain Makefile + pkg-config.
#   make            release binary ./gensendrep
#   make run        install what is missing, make sure an API key exists, serve on :8000
#   make test       format check, unit tests (cmocka), the store conformance suite (cmocka,
#                   SQLite and PostgreSQL), every fuzzer for a few seconds and black-box
#                   tests (pytest), all under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz       every libFuzzer target for FUZZ_SECONDS (default 60) each (see fuzz/README.md)
#   make bench      benchmarks (see README)
#   make image-test build the container image and run README "Deploying" with podman or Docker

PKGS      := libmicrohttpd gnutls jansson sqlite3 libpq hiredis libcrypto libcurl libnats
PYTHON    := /usr/bin/python3
WARN      := -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wformat=2 -Wundef -fno-common -Werror
DEFS      := -D_GNU_SOURCE -Isrc -Ibuild/gen
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread

REL_CFLAGS := -O2 -g -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
REL_LDFLAGS:= -pie -Wl,-z,relro,-z,now
DBG_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
DBG_LDFLAGS:= -fsanitize=address,undefined

SRCS      := $(shell find src -name '*.c' | sort)
LIB_SRCS  := $(filter-out src/main.c,$(SRCS))
GEN_SRCS  := build/gen/embedded.c build/gen/migrations_sqlite.c build/gen/migrations_pg.c
MIGRATIONS:= $(sort $(wildcard src/store/migrations/sqlite/*.sql))
PG_MIGRATIONS:= $(sort $(wildcard src/store/migrations/pg/*.sql))
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
CONFORMANCE_SRCS := tests/store/conformance.c

rel_obj = $(patsubst %.c,build/release/%.o,$(1))
dbg_obj = $(patsubst %.c,build/debug/%.o,$(1))

.PHONY: all debug run test test-build unit conformance integration format format-check deps deps-test bench \
        docs-assets clean readme-config deps-bench layering-check fuzz fuzz-build fuzz-quick
.DEFAULT_GOAL := all

all: deps gensendrep

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

# ---- generated sources ----
DASHBOARD := web/dashboard/index.html web/dashboard/app.js web/dashboard/app.css
build/gen/embedded.c: openapi/openapi.json docs/templates/swagger.html docs/templates/redoc.html \
                      $(DASHBOARD) tools/embed.sh
	@mkdir -p $(@D)
	tools/embed.sh $@ embedded_openapi_json=openapi/openapi.json \
	  embedded_swagger_html=docs/templates/swagger.html embedded_redoc_html=docs/templates/redoc.html \
	  embedded_dashboard_html=web/dashboard/index.html embedded_dashboard_js=web/dashboard/app.js \
	  embedded_dashboard_css=web/dashboard/app.css

build/gen/migrations_sqlite.c: $(MIGRATIONS) tools/migrations.sh
	@mkdir -p $(@D)
	tools/migrations.sh $@ sqlite src/store/migrations/sqlite

build/gen/migrations_pg.c: $(PG_MIGRATIONS) tools/migrations.sh
	@mkdir -p $(@D)
	tools/migrations.sh $@ pg src/store/migrations/pg

# ---- release ----
build/release/%.o: %.c
	@mkdir -p $(@D)
	@echo "CC $<"
	@$(CC) $(WARN) $(DEFS) $(REL_CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

gensendrep: $(call rel_obj,$(SRCS) $(GEN_SRCS))
	@echo "LD $@"
	@$(CC) $(REL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# ---- debug (sanitizers), used by every test ----
build/debug/%.o: %.c
	@mkdir -p $(@D)
	@echo "CC (debug) $<"
	@$(CC) $(WARN) $(DEFS) $(DBG_CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

build/debug/gensendrep: $(call dbg_obj,$(SRCS) $(GEN_SRCS))
	@echo "LD $@"
	@$(CC) $(DBG_LDFLAGS) -o $@ $^ $(PKG_LIBS)

build/debug/tests/%: tests/unit/%.c $(call dbg_obj,$(LIB_SRCS) $(GEN_SRCS))
	@mkdir -p $(@D)
	@echo "LD $@"
	@$(CC) $(WARN) -Wno-missing-prototypes $(DEFS) $(DBG_CFLAGS) $(PKG_CFLAGS) -o $@ $^ \
	  $(DBG_LDFLAGS) $(UNIT_LDFLAGS_$(notdir $@)) $(PKG_LIBS) -lcmocka

# Unit tests that replace a library call (fault injection) wrap it at link time.
UNIT_LDFLAGS_test_request := -Wl,--wrap=MHD_create_response_from_buffer
# The streamed answer's reader is called by the test itself (no connection to suspend).
UNIT_LDFLAGS_test_stream := -Wl,--wrap=MHD_create_response_from_callback \
  -Wl,--wrap=MHD_suspend_connection -Wl,--wrap=MHD_resume_connection
# The dispatcher's test fails a thread creation and counts the threads outbound_start starts,
# and counts the easy handles its deliveries take (curl_easy_init).
UNIT_LDFLAGS_test_outbound_dispatch := -Wl,--wrap=pthread_create -Wl,--wrap=curl_easy_init
# The splitter's test fails the allocation of its audio batch (malloc of 64 KiB when the audio
# starts): EL_SPLIT_NO_MEMORY, and a splitter that stays safe to feed and free.
UNIT_LDFLAGS_test_el_split := -Wl,--wrap=malloc

# The store conformance suite: one binary, every backend (see tests/store/conformance.c).
build/debug/tests/store_conformance: $(CONFORMANCE_SRCS) $(call dbg_obj,$(LIB_SRCS) $(GEN_SRCS))
	@mkdir -p $(@D)
	@echo "LD $@"
	@$(CC) $(WARN) -Wno-missing-prototypes $(DEFS) $(DBG_CFLAGS) $(PKG_CFLAGS) -o $@ $^ \
	  $(DBG_LDFLAGS) $(PKG_LIBS) -lcmocka

debug: deps build/debug/gensendrep

UNIT_BINS := $(patsubst tests/unit/%.c,build/debug/tests/%,$(UNIT_SRCS))

# ---- the two commands ----
run: deps gensendrep
	@scripts/ensure-key.sh
	./gensendrep

# Everything the checks run is built first on every core (BUILD_JOBS), then the checks run one
# after the other (their output stays readable, and timing tests do not race the compiler), but
# for the fuzzers' few seconds each, which run BUILD_JOBS at a time.
BUILD_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test: deps-test format-check layering-check
	@$(MAKE) --no-print-directory -j$(BUILD_JOBS) test-build
	@$(MAKE) --no-print-directory -j1 unit conformance
	@$(MAKE) --no-print-directory -k -j$(BUILD_JOBS) fuzz-quick-parallel
	@$(MAKE) --no-print-directory -j1 integration

unit: $(UNIT_BINS)
	@fail=0; for t in $(UNIT_BINS); do echo "== $$t"; $$t || fail=1; done; exit $$fail

# SQLite on a temporary file and PostgreSQL on a throw-away cluster (it fails, never skips,
# when PostgreSQL cannot be started).
conformance: build/debug/tests/store_conformance
	$(PYTHON) tests/store/run_conformance.py build/debug/tests/store_conformance

# Test files run on TEST_JOBS processes (python3-pytest-xdist), a module's tests together (they
# share a server per module): most of the suite waits on timeouts and servers, not on the CPU.
TEST_JOBS ?= 3
integration: build/debug/gensendrep build/debug/tests/test_queue
	$(PYTHON) -m pytest -c tests/integration/pytest.ini tests/integration -n $(TEST_JOBS) \
	    --dist loadscope

# core/ at the bottom, model/ never knows a database, plumbing never knows an endpoint.
layering-check:
	tools/check-layering.sh src

FORMAT_FILES = $(SRCS) $(shell find src tests/unit fuzz -name '*.h') $(UNIT_SRCS) \
               $(CONFORMANCE_SRCS) $(FUZZ_SRCS)

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

docs-assets:
	scripts/docs-assets.sh docs-assets

clean:
	rm -rf build gensendrep

# ---- fuzzing (libFuzzer, clang from Debian) ----
# One target per parser a client can reach: fuzz/fuzz_NAME.c, seeds in fuzz/corpus/NAME/.
# The library is built again with clang, coverage-instrumented and under ASan + UBSan; any
# crash, leak, sanitizer report or broken property stops the run with a non-zero status and
# leaves the input in build/fuzz/artifacts/. New inputs found go to build/fuzz/corpus/NAME/
# (not committed; copy the few that matter to fuzz/corpus/NAME/).
FUZZ_CC      := clang-14
FUZZ_SECONDS ?= 60
FUZZ_QUICK_SECONDS ?= 4
FUZZ_SRCS    := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_TARGETS := $(patsubst fuzz/fuzz_%.c,%,$(FUZZ_SRCS))
FUZZ_BINS    := $(patsubst %,build/fuzz/bin/fuzz_%,$(FUZZ_TARGETS))
# clang's -Wformat-nonliteral also flags va_list forwarding that gcc accepts.
FUZZ_CFLAGS  := $(WARN) -Wno-format-nonliteral $(DEFS) -g -O1 -fno-omit-frame-pointer \
                -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
FUZZ_LDFLAGS := -fsanitize=fuzzer,address,undefined
fuzz_obj = $(patsubst %.c,build/fuzz/obj/%.o,$(1))

build/fuzz/obj/%.o: %.c
	@mkdir -p $(@D)
	@echo "CC (fuzz) $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

# An archive, so each target links only the objects it reaches.
build/fuzz/libgensendrep.a: $(call fuzz_obj,$(LIB_SRCS) $(GEN_SRCS))
	@rm -f $@
	@ar rcs $@ $^

build/fuzz/bin/fuzz_%: build/fuzz/obj/fuzz/fuzz_%.o build/fuzz/libgensendrep.a
	@mkdir -p $(@D)
	@echo "LD $@"
	@$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ $(PKG_LIBS)

.PRECIOUS: build/fuzz/obj/%.o

fuzz-build: deps-test $(FUZZ_BINS)

# FUZZ_RUN_SECONDS per target; libFuzzer exits non-zero on any finding.
define fuzz_run
	@fail=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus/$$t build/fuzz/artifacts; \
	  echo "== fuzz $$t ($(1) s)"; \
	  build/fuzz/bin/fuzz_$$t -max_total_time=$(1) -print_final_stats=1 -timeout=10 \
	    -rss_limit_mb=1024 -artifact_prefix=build/fuzz/artifacts/$$t- \
	    build/fuzz/corpus/$$t fuzz/corpus/$$t 2>build/fuzz/$$t.log \
	    || { fail=1; tail -n 60 build/fuzz/$$t.log; }; \
	  grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done)' build/fuzz/$$t.log \
	    | tr '\n' ' '; echo; \
	done; exit $$fail
endef

fuzz: fuzz-build
	$(call fuzz_run,$(FUZZ_SECONDS))

fuzz-quick: fuzz-build
	$(call fuzz_run,$(FUZZ_QUICK_SECONDS))

# make test's fuzz step: fuzz-quick's runs, one target per job (make -j: each is one busy
# thread), each target's lines printed together when it ends.
FUZZ_QUICK_RUNS := $(patsubst %,fuzz-quick-%,$(FUZZ_TARGETS))
.PHONY: fuzz-quick-parallel $(FUZZ_QUICK_RUNS)
fuzz-quick-parallel: $(FUZZ_QUICK_RUNS)
$(FUZZ_QUICK_RUNS): fuzz-quick-%: build/fuzz/bin/fuzz_%
	@mkdir -p build/fuzz/corpus/$* build/fuzz/artifacts; \
	build/fuzz/bin/fuzz_$* -max_total_time=$(FUZZ_QUICK_SECONDS) -print_final_stats=1 \
	  -timeout=10 -rss_limit_mb=1024 -artifact_prefix=build/fuzz/artifacts/$*- \
	  build/fuzz/corpus/$* fuzz/corpus/$* 2>build/fuzz/$*.log; rc=$$?; \
	echo "== fuzz $* ($(FUZZ_QUICK_SECONDS) s)" $$(grep -E \
	  '^(stat::number_of_executed_units|stat::new_units_added|Done)' build/fuzz/$*.log); \
	if [ $$rc -ne 0 ]; then tail -n 60 build/fuzz/$*.log; fi; exit $$rc

# make test's build step (after FUZZ_BINS: prerequisites expand as the rule is read).
test-build: gensendrep build/debug/gensendrep $(UNIT_BINS) build/debug/tests/store_conformance \
            $(FUZZ_BINS)

-include $(shell find build -name '*.d' 2>/dev/null)

readme-config: gensendrep
	tools/readme-config.sh ./gensendrep

# ---- benchmarks ----
build/bench/static_server: bench/static_server.c
	@mkdir -p $(@D)
	@echo "CC $<"
	@$(CC) $(WARN) $(DEFS) -O2 $(PKG_CFLAGS) -o $@ $< $(PKG_LIBS)

build/bench/delivery_receiver: bench/delivery_receiver.c
	@mkdir -p $(@D)
	@echo "CC $<"
	@$(CC) $(WARN) $(DEFS) -O2 $(PKG_CFLAGS) -o $@ $< $(PKG_LIBS)

# The store generator of the export and analytics scenarios: the server's own write path
# (model parsers + store), linked from the release objects, without HTTP.
build/bench/gen_store: bench/gen_store.c $(call rel_obj,$(LIB_SRCS) $(GEN_SRCS))
	@mkdir -p $(@D)
	@echo "LD $@"
	@$(CC) $(WARN) $(DEFS) $(REL_CFLAGS) $(PKG_CFLAGS) $(REL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

bench: deps-bench gensendrep build/bench/static_server build/bench/delivery_receiver \
       build/bench/gen_store
	$(PYTHON) bench/run.py

deps-bench:
	@scripts/deps.sh bench

# ---- container image (not part of make test) ----
.PHONY: image-test deps-image
image-test: deps-image
	scripts/image-test.sh

deps-image:
	@scripts/deps.sh image
