# lockext: PostgreSQL extension with a C++ core, built with PGXS.
EXTENSION = lockext
MODULE_big = lockext
DATA = sql/lockext--0.1.0.sql sql/lockext--0.1.0--0.2.0.sql
OBJS = src/lock_table.o src/lock_shmem.o src/lock_functions.o src/lock_views.o \
       src/queue_ops.o src/queue_scan.o src/queue_notify.o \
       src/durable_state.o src/durable_wal.o

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(CURDIR)/include
PG_CXXFLAGS = -std=c++17 -fno-rtti -Wall -Wextra -Wno-unused-parameter \
              -Wno-missing-field-initializers -Wno-register
SHLIB_LINK = -lstdc++

# pg_regress and isolation tests: test/sql, test/specs, expected outputs in expected/.
REGRESS = $(patsubst test/sql/%.sql,%,$(sort $(wildcard test/sql/*.sql)))
ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
REGRESS_OPTS = --inputdir=test --outputdir=$(or $(LOCKEXT_RESULTS),test/results)
ISOLATION_OPTS = --inputdir=test --outputdir=$(or $(LOCKEXT_RESULTS),test/results)/isolation

# No LLVM bitcode: the JIT gains nothing on these entry points.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS compiles C++ with CXXFLAGS from the server build; keep ours in front.
override CXXFLAGS := $(PG_CXXFLAGS) $(filter-out -std=%,$(CXXFLAGS))

# PGXS tracks no header dependencies here: rebuild every object when a
# header changes (a stale object would read shared structs with an old layout).
$(OBJS): $(wildcard include/lockext/*.hpp)
