-- lockext 0.1.0: named leases in shared memory.
\echo Use "CREATE EXTENSION lockext" to load this file. \quit

GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;

-- Take a lock; returns its fencing token, or NULL when not obtained within wait.
CREATE FUNCTION @extschema@.acquire(
    name text,
    ttl interval DEFAULT '30 seconds',
    wait interval DEFAULT '0',
    mode text DEFAULT 'exclusive',
    scope text DEFAULT 'lease',
    max_holders int DEFAULT 1,
    owner text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockext_acquire'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Extend a held lease; returns the new expiry, or NULL when the token no longer holds it.
CREATE FUNCTION @extschema@.renew(name text, token bigint, ttl interval DEFAULT NULL)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'lockext_renew'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Release a held lease; false when the token no longer holds it.
CREATE FUNCTION @extschema@.release(name text, token bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'lockext_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Release every holder of a name, token or not. Administrators only.
CREATE FUNCTION @extschema@.force_release(name text)
RETURNS integer
AS 'MODULE_PATHNAME', 'lockext_force_release'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION @extschema@.force_release(text) FROM PUBLIC;

CREATE FUNCTION @extschema@._holders(
    OUT name text, OUT mode text, OUT token bigint, OUT owner text, OUT scope text,
    OUT pid integer, OUT application_name text, OUT client_addr inet,
    OUT acquired_at timestamptz, OUT renewed_at timestamptz, OUT expires_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'lockext_holders'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@._waiters(
    OUT name text, OUT mode text, OUT pid integer, OUT owner text,
    OUT waiting_since timestamptz, OUT "position" integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'lockext_waiters'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@._stats(
    OUT acquired bigint, OUT released bigint, OUT expired bigint, OUT renewed bigint,
    OUT timed_out bigint, OUT cancelled bigint, OUT contended bigint,
    OUT slots_used integer, OUT slots_total integer)
RETURNS record
AS 'MODULE_PATHNAME', 'lockext_stats'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- Live holders in this database; an expired lease never shows here.
CREATE VIEW @extschema@.holders AS SELECT * FROM @extschema@._holders();
-- Queued requests in this database, in queue order per name.
CREATE VIEW @extschema@.waiters AS
    SELECT * FROM @extschema@._waiters() ORDER BY name, "position";
-- Counters since server start (all databases) and slot usage.
CREATE VIEW @extschema@.stats AS SELECT * FROM @extschema@._stats();

GRANT SELECT ON @extschema@.holders, @extschema@.waiters, @extschema@.stats TO PUBLIC;
