// The C++/PostgreSQL boundary: every SQL-callable function goes through here.
//
// Rules this header enforces or documents (see PostgreSQL's "Using C++ for
// Extensibility"):
//  - SQL entry points are `extern "C"` and declared only with
//    LOCKEXT_SQL_FUNCTION, which wraps the body in lockext::pg::guarded().
//  - guarded() catches every C++ exception and turns it into
//    ereport(ERROR) *after* the catch block has finished, so no exception
//    object is live when PostgreSQL longjmps. The message is copied into a
//    static buffer, not palloc'd, because an allocation inside the handler
//    could itself raise an error.
//  - A body (the `*_impl` function) is PostgreSQL-world code: it may call
//    functions that ereport, so it keeps only plain data on its stack. The
//    objects with behaviour live in the pure C++ core (lock_table.hpp), which
//    never calls back into PostgreSQL, never allocates and never throws.
//    Hence an ereport from a body can only unwind frames with trivial
//    destructors, and a C++ exception can only start below it.
// Include after postgres.h and fmgr.h.
#pragma once

#include <exception>

namespace lockext::pg {

// Run an SQL function body; a C++ exception becomes an ERROR (XX000).
template <Datum (*Body)(FunctionCallInfo)>
Datum guarded(FunctionCallInfo fcinfo) {
    static char message[512];
    try {
        return Body(fcinfo);
    } catch (const std::exception &e) {
        strlcpy(message, e.what(), sizeof(message));
    } catch (...) {
        strlcpy(message, "unknown C++ exception", sizeof(message));
    }
    ereport(ERROR,
            (errcode(ERRCODE_INTERNAL_ERROR), errmsg("lockext internal error: %s", message)));
    pg_unreachable();
}

}  // namespace lockext::pg

// Declare SQL function `lockext_<name>` whose body is `<name>_impl`.
#define LOCKEXT_SQL_FUNCTION(name)                        \
    extern "C" {                                          \
    PG_FUNCTION_INFO_V1(lockext_##name);                  \
    Datum lockext_##name(PG_FUNCTION_ARGS) {              \
        return lockext::pg::guarded<name##_impl>(fcinfo); \
    }                                                     \
    }
