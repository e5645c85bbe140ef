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

{#- Read-only: usage + select on segments, now and for tables dbt recreates later; nothing else.
    Skipped while the segments schema does not exist yet (e.g. a build of staging only). -#}
{% macro grant_analyst_access() -%}
    {%- set role = adapter.quote(var("analyst_role")) -%}
    do $$
    begin
        if exists (select from pg_namespace where nspname = 'segments') then
            grant usage on schema segments to {{ role }};
            grant select on all tables in schema segments to {{ role }};
            alter default privileges in schema segments grant select on tables to {{ role }};
        end if;
    end
    $$;
{%- endmacro %}
