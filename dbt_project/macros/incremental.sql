{#- Incremental models (docs/architecture.md "Incremental dbt"): each keeps `landed_at`, the latest
    raw.*.loaded_at of everything its row was built from, and on a scheduled run rebuilds only the keys
    whose inputs landed since its newest row minus var('incremental_lookback_hours') (Square offline
    payments arrive up to 72 h late; a row landed while the previous build ran is re-read too).
    --full-refresh (or a missing table) builds everything. -#}

{#- The landing time from which this run re-reads: the model's newest landed_at minus the look-back. -#}
{% macro incremental_cutoff(column='landed_at') -%}
    ((select coalesce(max({{ column }}), '-infinity'::timestamptz) from {{ this }})
        - interval '{{ var("incremental_lookback_hours") }} hours')
{%- endmacro %}

{#- Data tests on the large models: on a scheduled run only rows landed within the look-back (plus a
    day) are checked; on --full-refresh (or with var full_refresh_tests: true) all of
    them. Use as `config: {where: "{{ recent_rows() }}"}`. -#}
{% macro recent_rows(column='landed_at') -%}
    {%- if flags.FULL_REFRESH or var('full_refresh_tests', false) -%}
        true
    {%- else -%}
        {{ column }} >= now() - interval '{{ var("incremental_lookback_hours") + 24 }} hours'
    {%- endif -%}
{%- endmacro %}

{#- Post-hook of an incremental mart: delete the rows whose key no longer passes the mart's filter
    upstream (an order that became excluded, a customer whose email became invalid, a disabled
    connection). delete+insert only replaces keys present in the new batch, so without this a row that
    should leave would stay. A hash anti-join on typed key columns: cheap next to rebuilding. -#}
{% macro delete_rows_not_in(keys, upstream, upstream_keys, where) -%}
    {%- if is_incremental() -%}
    delete from {{ this }} as target
    where not exists (
        select 1 from {{ upstream }} as upstream
        where {% for key in keys -%}
            upstream.{{ upstream_keys[loop.index0] }} = target.{{ key }}{% if not loop.last %} and {% endif %}
        {%- endfor %}
          and ({{ where }})
    )
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}
