// Included last by translation units that must stay free of PostgreSQL.
//
// The lock-table core is plain C++: it may use exceptions-free RAII and the
// standard library, so a PostgreSQL header there would invite an ereport()
// longjmp over C++ frames. This header makes such an include a compile error.
#pragma once

#if defined(POSTGRES_H) || defined(PG_CONFIG_H) || defined(FMGR_H)
static_assert(false, "a PostgreSQL header was included in a pure C++ file of lockext");
#endif
