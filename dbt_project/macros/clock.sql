{#- The models that read the clock (ecomsync.build_inputs.TIME_DEPENDENT_MODELS: abandoned_carts,
    segment_members) record after each build when their rows next change if nothing lands:
    intermediate.clock_due (model, due_at; 'infinity': never). ecomsync.build_inputs skips the scheduled
    build of a cycle with nothing landed before the earliest due_at, as it would rebuild the same rows. -#}
{% macro clock_due_relation() -%}
    intermediate.clock_due
{%- endmacro %}

{#- on-run-start -#}
{% macro create_clock_due() -%}
    create schema if not exists intermediate;
    create table if not exists {{ clock_due_relation() }} (
        model text primary key,
        due_at timestamptz not null
    )
{%- endmacro %}

{#- Post-hook of a clock model: `due_at`, a scalar SQL expression (null: never). -#}
{% macro record_clock_due(due_at) -%}
    insert into {{ clock_due_relation() }} (model, due_at)
    values ('{{ this.identifier }}', coalesce(({{ due_at }}), 'infinity'::timestamptz))
    on conflict (model) do update set due_at = excluded.due_at
{%- endmacro %}

{#- Midnight UTC of the day of `timestamp` (a timestamptz), whatever the session's time zone. -#}
{% macro utc_day_start(timestamp='now()') -%}
    (date_trunc('day', ({{ timestamp }}) at time zone 'UTC') at time zone 'UTC')
{%- endmacro %}
