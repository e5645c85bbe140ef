{#- The changes to what the models read that carry no landing time: state.change_events, written by triggers on
    every raw table and on state.connections (plugins/ecomsync/warehouse.py, CHANGE_EVENTS_DDL), so no writer can
    forget them. Without them a scheduled build could only find such a change by comparing whole tables with
    their inputs (an anti-join of every order with the raw tables, a set difference of every synced order with
    the mart), which cost seconds per model at scale 1 on every build (docs/benchmarks.md, issue 16).

    - A deleted raw record: the models delete the keys deleted since their cutoff (deleted_raw_keys()).
    - Everything else — a connection added, enabled, disabled or deleted, a raw table truncated — and a direct
      upstream model built whole since this model's last build (its '<model>__built_whole' watermark): the
      model runs its whole-table comparisons once more (whole_table_checks_due()), as every build did before.
    Events are read since the model's cutoff (its previous build's start minus the look-back), so an event
    committed while that build ran is read again, as a landed row is. -#}

{#- (connection_id, pk) of the records deleted from the raw tables `tables` (names without the schema) since
    this model's cutoff. `column`: the model's landing column, for incremental_cutoff(). -#}
{% macro deleted_raw_keys(tables, column='landed_at') -%}
    {%- if not source_exists('state', 'change_events') -%}
    select null::text as connection_id, null::text as pk where false  -- whole_table_checks_due() is true then
    {%- else -%}
    select connection_id, pk
    from {{ source('state', 'change_events') }}
    where change = 'delete'
      and relation in ({% for table in tables %}'raw.{{ table }}'{% if not loop.last %}, {% endif %}{% endfor %})
      and changed_at >= {{ incremental_cutoff(column) }}
    {%- endif -%}
{%- endmacro %}

{#- Whether this incremental build must compare whole tables with their inputs (a boolean, read when the model
    or its hook is rendered): this model has no watermark yet, a change other than a raw record's deletion was
    recorded since its cutoff, or one of `upstreams` (model names) was built whole after this model's last
    build. True at parse time, when the model is built whole and in a warehouse whose extract has not created
    state.change_events yet (a warehouse of an older version). Read once per rendering context and `upstreams`
    (kept in the node's context, `model`). dbt renders the model's SQL and its hooks in separate contexts, so
    the SQL and a pre-hook may read it at different moments: an event committed in between makes only the later
    one due, and a due only adds work (a whole comparison where the candidates would do); a model whose SQL and
    pre-hook must agree takes the answer from a temporary table its pre-hook writes (macros/customer_contacts.sql,
    macros/segments.sql). Called from the model's SQL and its pre-hooks, before the project's post-hook
    record_incremental_watermark() moves the watermark (dbt runs dbt_project.yml's hooks first). -#}
{% macro whole_table_checks_due(upstreams=[]) -%}
    {%- if not execute or not is_incremental() or not source_exists('state', 'change_events') -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set memo = '_ecomsync_whole_table_checks_due:' ~ upstreams | join(',') -%}
    {%- if model is mapping and memo in model -%}
        {{ return(model[memo]) }}
    {%- endif -%}
    {%- set watermarks = incremental_watermarks_relation() -%}
    {%- set query -%}
    with own as (
        select built_from from {{ watermarks }} where model = '{{ this.identifier }}'
    )
    select
        not exists (select from own)
        or exists (
            select from {{ source('state', 'change_events') }}
            where (change <> 'delete' or relation = 'state.connections')
              and changed_at >= (select built_from from own) - interval '{{ var("incremental_lookback_hours") }} hours'
        )
        {%- for upstream in upstreams %}
        or coalesce((select built_from from {{ watermarks }} where model = '{{ upstream }}__built_whole')
                    > (select built_from from own), false)
        {%- endfor %}
    {%- endset -%}
    {%- set due = run_query(query).columns[0].values()[0] -%}
    {%- if model is mapping -%}
        {%- do model.update({memo: due}) -%}
    {%- endif -%}
    {{ return(due) }}
{%- endmacro %}

{#- on-run-end: the change events and the contact changes (intermediate.incremental_contact_changes,
    macros/incremental.sql) every incremental model has read: older than the earliest cutoff of the project's
    incremental models with a watermark. A model that failed, or was not selected for days, keeps its older
    watermark and so every change it has yet to read (a fixed retention would drop them after a long outage);
    both tables then grow until it builds again (an index on changed_at keeps the readers' range reads cheap).
    The watermark of a model no longer in the project holds nothing back. Nothing before the extract has
    created state.change_events. -#}
{% macro purge_read_changes() -%}
    {%- if not execute -%}
    select 1
    {%- else -%}
    {%- set models = [] -%}
    {%- for node in graph.nodes.values()
            if node.resource_type == 'model' and node.config.materialized == 'incremental' -%}
        {%- do models.append("'" ~ node.alias ~ "'") -%}
    {%- endfor -%}
    {%- set earliest_cutoff -%}
    (
        select min(built_from) - interval '{{ var("incremental_lookback_hours") }} hours'
        from {{ incremental_watermarks_relation() }}
        where model in ({{ models | join(', ') if models else 'null' }})
    )
    {%- endset -%}
    delete from {{ contact_changes_relation() }} where changed_at < {{ earliest_cutoff }}
    {%- if source_exists('state', 'change_events') %};
    delete from {{ source('state', 'change_events') }} where changed_at < {{ earliest_cutoff }}
    {%- endif -%}
    {%- endif -%}
{%- endmacro %}
