-- Append one entry to the audit log (a dashboard action whose outcome is known when it is written).
-- KEYS: 1 audit stream, 2 audit outcomes hash
-- ARGV: 1 cap (entries kept), 2 entry id, 3 command json, 4 status, 5 reason
--! include audit_lib
audit_append(KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2], "command", ARGV[3], "status", ARGV[4],
    "reason", ARGV[5])
return 1
