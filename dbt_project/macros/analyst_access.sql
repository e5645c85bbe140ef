{#- P5: analysts read the segments schema through the NOLOGIN group role var('analyst_role');
    a DBA grants it to a login:  create role jane login password '…' in role analyst;
    The role is cluster-wide, so concurrent builds of several databases may race to create it. -#}
{% macro ensure_analyst_role() -%}
    do $$
    begin
        if not exists (select from pg_roles where rolname = '{{ var("analyst_role") }}') then
            create role {{ adapter.quote(var("analyst_role")) }} nologin;
        end if;
    exception when duplicate_object or unique_violation then
        null;  -- created by a concurrent build
    end
    $$;
{%- endmacro %}

{#- Read-only means read-only (issue 15, docs/security.md), run after every build:
    - usage + select on segments, now and for tables dbt recreates later; nothing else;
    - no temporary tables and so no functions either (pg_temp is the one schema an analyst could create a
      function in): TEMPORARY on the warehouse database is revoked from PUBLIC — a privilege PUBLIC holds
      cannot be denied to one role — and granted back to the role running dbt (its incremental models, and
      the extract's landing batch when the same role extracts; other pipeline roles need the same grant);
    - no CREATE on schema public (already so by default since Postgres 15);
    - a statement timeout, var('analyst_statement_timeout') (default 60s), set in this database on every login
      role that is a member of the analyst role (role settings apply at login and are not inherited, so the
      group role's own setting would not reach jane). An analyst may still raise it for a session.
    Skipped while the segments schema does not exist yet (e.g. a build of staging only). -#}
{% macro grant_analyst_access() -%}
    {%- set role = adapter.quote(var("analyst_role")) -%}
    {%- set timeout = var("analyst_statement_timeout", "60s") -%}
    do $$
    declare
        login name;
    begin
        if exists (select from pg_namespace where nspname = 'segments') then
            grant usage on schema segments to {{ role }};
            grant select on all tables in schema segments to {{ role }};
            alter default privileges in schema segments grant select on tables to {{ role }};
        end if;
        execute format('revoke temporary on database %I from public', current_database());
        execute format('grant temporary on database %I to %I', current_database(), current_user);
        revoke create on schema public from public;
        for login in
            select member.rolname from pg_roles as member
            where member.rolcanlogin and not member.rolsuper and member.rolname <> current_user
              and pg_has_role(member.oid, '{{ var("analyst_role") }}', 'member')
        loop
            begin
                execute format('alter role %I in database %I set statement_timeout = %L',
                               login, current_database(), '{{ timeout }}');
            exception when insufficient_privilege then
                raise warning 'cannot set statement_timeout for analyst login %: ask a DBA to run '
                              'alter role % in database % set statement_timeout = ''{{ timeout }}''',
                              login, login, current_database();
            end;
        end loop;
    end
    $$;
{%- endmacro %}

{#- For a DBA after adding an analyst login (its statement timeout is set here, not only at the next build):
        dbt run-operation apply_analyst_access -#}
{% macro apply_analyst_access() -%}
    {% do run_query(ensure_analyst_role()) %}
    {% do run_query(grant_analyst_access()) %}
{%- endmacro %}
