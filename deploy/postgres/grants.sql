-- The gateway role's privileges, run as strongroom_owner after every
-- `strongroom db upgrade` (docs/operations.md, "Least privilege"). The
-- gateways read and write data in every table the migrations made, so a
-- release that adds tables needs nothing new here; they may not alter the
-- schema, nor change or delete audit rows.
GRANT CONNECT ON DATABASE strongroom TO strongroom_app;
GRANT USAGE ON SCHEMA public TO strongroom_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO strongroom_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO strongroom_app;
REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM strongroom_app;
REVOKE UPDATE, DELETE ON audit_records, audit_nodes, audit_checkpoints FROM strongroom_app;
REVOKE INSERT, DELETE ON audit_prune_horizon FROM strongroom_app;
