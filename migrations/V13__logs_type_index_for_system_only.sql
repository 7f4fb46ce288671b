-- Business logs are most of the table (one per AI call and job) and are
-- read by user (`logs_by_user`) or newest first; an entry per row in a
-- (log_type, level) index cost every one of them an index insert in the
-- writer (issue 19). System logs are few: they keep their index, by level
-- and in id order. Business warnings and errors (refusals, failed calls)
-- are the exceptions an admin filters for, and keep an entry; a successful
-- business log gets none.
DROP INDEX logs_by_type;
CREATE INDEX logs_system ON logs(id) WHERE log_type = 'system';
CREATE INDEX logs_system_by_level ON logs(level, id) WHERE log_type = 'system';
CREATE INDEX logs_business_not_info ON logs(level, id) WHERE log_type = 'business' AND level <> 'info';
