#!/bin/sh
# Runs once, when the PostgreSQL volume is empty, as the image's superuser:
# the role that owns the schema (migrations) and the role the gateways use.
# Passwords come from the compose secrets, never from this file.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_password="$(cat /run/secrets/postgres_owner_password)" \
  -v app_password="$(cat /run/secrets/postgres_app_password)" <<'SQL'
CREATE ROLE strongroom_owner LOGIN PASSWORD :'owner_password';
CREATE DATABASE strongroom OWNER strongroom_owner;
CREATE ROLE strongroom_app LOGIN PASSWORD :'app_password';
REVOKE ALL ON DATABASE strongroom FROM PUBLIC;
SQL
