{#- Incremental models (docs/architecture.md "Incremental dbt"): each keeps `landed_at`, the latest
    raw.*.loaded_at of everything its row was built from, and on a scheduled run rebuilds only the keys
    whose inputs landed since the cutoff (``incremental_cutoff``: when its previous build started, minus
    var('incremental_lookback_hours'); Square offline payments arrive up to 72 h late; a row landed while
    the previous build ran is re-read too).
    --full-refresh (or a missing table) builds everything. -#}

{#- The landing time from which this run re-reads: when the model's previous build started
    (intermediate.incremental_watermarks, written by record_incremental_watermark()) minus the look-back,
    so a row landed by a transaction still open when that build read, or a Square payment synced late
    into an earlier window, is read again. Without a watermark (a table built before them): the model's
    newest landing time minus the look-back. -#}
{#- When the model runs (is_incremental()), the cutoff is read then and written into its SQL as a literal: the
    planner then knows how few rows lie after it (a `landed_at >= (subquery)` is guessed at a third of the
    table, so the landed_at indexes of the intermediate models went unused and every build read them whole).
    Read once per rendering context and column, kept in the node's context (`model`): a hook that names the
    cutoff several times (int_customers_unioned's pre-hook) reads it once. dbt renders the model's SQL
    and its hooks in separate contexts, so each reads it once; between the two only a build that moved the
    watermark could change it, and none runs beside. -#}
{% macro incremental_cutoff(column='landed_at') -%}
    {%- set expression -%}
    (coalesce(
        (select built_from from {{ incremental_watermarks_relation() }} where model = '{{ this.identifier }}'),
        (select max({{ column }}) from {{ this }}),
        '-infinity'::timestamptz
    ) - interval '{{ var("incremental_lookback_hours") }} hours')
    {%- endset -%}
    {%- if execute and is_incremental() -%}
        {%- set memo = '_ecomsync_incremental_cutoff:' ~ column -%}
        {%- if model is mapping and memo in model -%}
            {%- set cutoff = model[memo] -%}
        {%- else -%}
            {%- set cutoff = run_query("select " ~ expression ~ "::text").columns[0].values()[0] -%}
            {%- if model is mapping -%}
                {%- do model.update({memo: cutoff}) -%}
            {%- endif -%}
        {%- endif -%}
        '{{ cutoff }}'::timestamptz
    {%- else -%}
        {{ expression }}
    {%- endif -%}
{%- endmacro %}

{% macro incremental_watermarks_relation() -%}
    intermediate.incremental_watermarks
{%- endmacro %}

{#- on-run-start: the watermark table, one row per incremental model: when its last build started. -#}
{% macro create_incremental_watermarks() -%}
    create schema if not exists intermediate;
    create table if not exists {{ incremental_watermarks_relation() }} (
        model text primary key,
        built_from timestamptz not null
    );
    create table if not exists {{ contact_changes_relation() }} (
        email text not null,
        connection_id text not null,
        changed_at timestamptz not null
    );
    -- columns added since the tables were first created: an ALTER only where one is missing (ALTER TABLE takes an
    -- ACCESS EXCLUSIVE lock even when IF NOT EXISTS finds the column)
    do $$
    begin
        -- what a model's rows were built by, where its SQL can change without its columns (segment_members)
        if not exists (select from information_schema.columns where table_schema = 'intermediate'
                       and table_name = 'incremental_watermarks' and column_name = 'definition_hash') then
            alter table {{ incremental_watermarks_relation() }} add column definition_hash text;
        end if;
        if not exists (select from information_schema.columns where table_schema = 'intermediate'
                       and table_name = 'incremental_contact_changes' and column_name = 'recorded_by') then
            alter table {{ contact_changes_relation() }} add column recorded_by text;
        end if;
        -- every reader reads a range of changed_at (its cutoff on); the table grows while a model is not built
        if to_regclass('intermediate.incremental_contact_changes_changed_at') is null then
            create index incremental_contact_changes_changed_at on {{ contact_changes_relation() }} (changed_at);
        end if;
    end
    $$
{%- endmacro %}

{#- intermediate.incremental_contact_changes: contacts (email, connection_id) a scheduled build changed,
    when, and which model recorded them (recorded_by):
      - crm.ecom_orders: the contacts it took an order from, recorded by its pre-hook before it replaces
        the order's row (an order whose customer's email changed leaves the contact of its old email, which
        the purchase bridges and contact_order_history must rebuild too: another account may share that
        email) and by its post-hook as it deletes the rows that no longer sync (an order erased from raw
        with nothing landed);
      - contact_order_history and contact_ecommerce_profile: the emails they rebuilt (connection_id 'all'),
        for contact_ecommerce_profile and segment_members.
      - int_customers_unioned: the contacts of the customers it rebuilt, as they were and as they are, for
        contact_ecommerce_profile, crm.contacts and crm.ecom_customers.
    Each reader takes the rows recorded since its cutoff; dbt's on-run-end purges the rows no model can read any
    more (purge_read_changes(), macros/change_events.sql). -#}
{% macro contact_changes_relation() -%}
    intermediate.incremental_contact_changes
{%- endmacro %}

{% macro record_contact_changes() -%}
    {%- if not is_incremental() -%}
    select 1
    {%- else -%}
    insert into {{ contact_changes_relation() }} (email, connection_id, changed_at, recorded_by)
    select distinct previous.email, previous.connection_id, now(), '{{ this.identifier }}'
    from {{ this }} as previous
    where previous.email is not null
      and (previous.connection_id, previous.external_id) in (
          select connection_id, order_external_id
          from {{ ref('int_orders_enriched') }}
          where landed_at >= {{ incremental_cutoff() }}
      )
    {%- endif -%}
{%- endmacro %}

{#- What an incremental model's rows were built by, where its SQL can change without its columns — the segment
    catalogue (segment_members), the customer tag vars (crm.contacts) — as a hash `definition` (a string; dbt's
    local_md5 of what it covers) in intermediate.incremental_watermarks.definition_hash. definition_changed():
    a SQL condition, true when the table was built by another definition (or none was recorded): the model's
    pre-hook then rebuilds every row. record_definition(): its post-hook. -#}
{% macro definition_changed(definition) -%}
    ((select definition_hash from {{ incremental_watermarks_relation() }} where model = '{{ this.identifier }}')
     is distinct from '{{ definition }}')
{%- endmacro %}

{% macro record_definition(definition) -%}
    insert into {{ incremental_watermarks_relation() }} (model, built_from, definition_hash)
    values ('{{ this.identifier }}', '{{ run_started_at.isoformat() }}'::timestamptz, '{{ definition }}')
    on conflict (model) do update set definition_hash = excluded.definition_hash
{%- endmacro %}

{#- Post-hook of every model (dbt_project.yml), a no-op but on incremental ones: this build read
    everything landed before it started (run_started_at, UTC), less what the look-back re-reads next time.
    A build of the whole table (first build, --full-refresh, an older table upgraded: macros/upgrade.sql) is
    also recorded as '<model>__built_whole': the models incremental on it (contact_ecommerce_profile on
    contact_order_history, segment_members on its sources) then rebuild every email once, as every row of
    it may have changed. -#}
{% macro record_incremental_watermark() -%}
    {%- if model.config.materialized != 'incremental' -%}
    select 1
    {%- else -%}
    insert into {{ incremental_watermarks_relation() }} (model, built_from)
    values ('{{ this.identifier }}', '{{ run_started_at.isoformat() }}'::timestamptz)
    {%- if not is_incremental() %},
           ('{{ this.identifier }}__built_whole', '{{ run_started_at.isoformat() }}'::timestamptz)
    {%- endif %}
    on conflict (model) do update set built_from = excluded.built_from
    {%- endif -%}
{%- endmacro %}

{#- Data tests on the incremental models and the staging views over raw tables (dbt's `where` hook,
    overridden): on a scheduled run a test checks only the rows landed within the look-back plus a day
    — what that run can have written or read anew; with --full-refresh, or var data_tests_on_all_rows:
    true, it checks every row. The landing condition:
      - an incremental model documenting `evaluated_at` (when a build rebuilt the row: segment_members): the
        rows its latest build rebuilt (evaluated_at >= its watermark), as it is not landed but evaluated;
      - another incremental model: its `last_landed_at` if it documents one, else `landed_at`;
      - a staging view documenting `loaded_at`: that column (the filter reaches the raw table's scan);
      - a staging view whose meta names `landed_with: {column, source}` (a view of rows unnested from
        a raw record, e.g. an order's lines): `connection_id = any(<connections landed recently>) and
        column = any(<keys landed recently>)`: two conditions on values computed once, which Postgres pushes
        through the view (below its DISTINCT ON, where a semi-join would not go) to the raw primary key
        (connection_id, pk), so only the recent orders are read (a superset: a recent key's order in another
        connection too). With the key's second column alone every order was read and compared with every
        recent key: ~1 s per test at scale 0.25; as a semi-join, every order was unnested: ~3 s.
    An explicit `where` config still applies, on top. -#}
{% macro get_where_subquery(relation) -%}
    {%- set conditions = [] -%}
    {%- if config.get('where') -%}
        {%- do conditions.append('(' ~ config.get('where') ~ ')') -%}
    {%- endif -%}
    {%- set tested = graph.nodes.get(model.attached_node) if execute and model.attached_node else none -%}
    {%- if tested and not flags.FULL_REFRESH and not var('data_tests_on_all_rows', false) -%}
        {%- set recent = "now() - interval '" ~ (var('incremental_lookback_hours') + 24) ~ " hours'" -%}
        {%- set landed_with = tested.config.meta.get('landed_with') -%}
        {%- if tested.config.materialized == 'incremental' and 'evaluated_at' in tested.columns -%}
            {%- do conditions.append("evaluated_at >= coalesce((select built_from from "
                                     ~ incremental_watermarks_relation() ~ " where model = '"
                                     ~ tested.alias ~ "'), '-infinity')") -%}
        {%- elif tested.config.materialized == 'incremental' -%}
            {%- set column = 'last_landed_at' if 'last_landed_at' in tested.columns else 'landed_at' -%}
            {%- do conditions.append(column ~ ' >= ' ~ recent) -%}
        {%- elif tested.config.materialized == 'view' and 'loaded_at' in tested.columns -%}
            {%- do conditions.append('loaded_at >= ' ~ recent) -%}
        {%- elif tested.config.materialized == 'view' and landed_with -%}
            {%- set raw = graph.sources[landed_with.source].relation_name -%}
            {%- set landed = ' from ' ~ raw ~ ' where loaded_at >= ' ~ recent -%}
            {%- do conditions.append('connection_id = any(array(select distinct connection_id' ~ landed ~ '))'
                                     ~ ' and ' ~ landed_with.column ~ ' = any(array(select pk' ~ landed ~ '))') -%}
        {%- endif -%}
    {%- endif -%}
    {%- if conditions -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ conditions | join(' and ') ~ ') dbt_subquery') -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}

{#- Pre-hook of an incremental model built on `upstream` (a model already built in this run): delete the rows
    whose key no longer passes the filter `where` upstream (an order that became excluded, a disabled
    connection, an order whose raw record is gone). delete+insert only replaces keys present in the new batch,
    so without this a row that should leave would stay. Only the keys of `candidates` (a select of key tuples:
    what can have left since the cutoff — the raw records deleted, the upstream rows rebuilt) are checked,
    unless whole_table_checks_due(upstreams) (a connection changed, a table truncated, an upstream built whole):
    then every row, by a hash anti-join on the typed key columns. A pre-hook, not a post-hook: the batch's keys
    all pass `where` upstream, so deleting first leaves the same rows, and the cutoff is read before the
    project's post-hook moves it. record_contacts: also record the (email, connection_id) of the deleted rows in
    intermediate.incremental_contact_changes (crm.ecom_orders: an order erased with nothing landed leaves
    its contact's purchase bridges, which would not otherwise know it). -#}
{% macro delete_rows_not_in(keys, upstream, upstream_keys, where, candidates, upstreams, record_contacts=false) -%}
    {%- if is_incremental() -%}
    {%- set key_list = keys | join(', ') -%}
    {%- if record_contacts %}
    with deleted as (
    {%- endif %}
    delete from {{ this }} as target
    {%- if not whole_table_checks_due(upstreams) %}
    using (
        -- each candidate looked up in upstream by its key (a lateral LIMIT 1: an index probe per candidate; as a
        -- NOT EXISTS the planner hashed all of upstream for a few thousand candidates)
        select {% for key in keys %}candidate.{{ key }}{% if not loop.last %}, {% endif %}{% endfor %}
        from (select distinct * from ({{ candidates }}) as listed ({{ key_list }})) as candidate
        left join lateral (
            select true as present
            from {{ upstream }} as upstream
            where {% for key in keys -%}
                upstream.{{ upstream_keys[loop.index0] }} = candidate.{{ key }}{% if not loop.last %} and {% endif %}
            {%- endfor %}
              and ({{ where }})
            limit 1
        ) as found on true
        where found.present is null
    ) as gone
    where {% for key in keys -%}
        target.{{ key }} = gone.{{ key }}{% if not loop.last %} and {% endif %}
    {%- endfor %}
    {%- else %}
    where not exists (
        select 1 from {{ upstream }} as upstream
        where {% for key in keys -%}
            upstream.{{ upstream_keys[loop.index0] }} = target.{{ key }}{% if not loop.last %} and {% endif %}
        {%- endfor %}
          and ({{ where }})
    )
    {%- endif %}
    {%- if record_contacts %}
    returning target.email, target.connection_id
    )
    insert into {{ contact_changes_relation() }} (email, connection_id, changed_at, recorded_by)
    select distinct email, connection_id, now(), '{{ this.identifier }}'
    from deleted
    where email is not null
    {%- endif %}
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- Pre-hook of int_orders_enriched and int_order_lines_enriched: an order gone from int_orders_unioned (its raw
    record was deleted) leaves them too. -#}
{% macro delete_orders_gone_upstream() -%}
    {{ delete_rows_not_in(
        keys=['connection_id', 'order_external_id'], upstream=ref('int_orders_unioned'),
        upstream_keys=['connection_id', 'order_external_id'], where='true',
        candidates=deleted_raw_keys(['bigcommerce_orders', 'square_payments']), upstreams=['int_orders_unioned']) }}
{%- endmacro %}

{#- Pre-hook of int_orders_unioned: an order whose raw record is gone (erased for privacy, see
    ecomsync.privacy, or deleted by hand) leaves the incremental model too, as it would on a full
    refresh; the later models follow by delete_rows_not_in(). The orders deleted from raw since the cutoff
    (state.change_events, macros/change_events.sql), or every order when whole_table_checks_due() (a raw table
    truncated, a connection changed): an anti-join on the raw primary keys. Before the model's batch, which
    has no order without a raw record. -#}
{% macro delete_orders_without_raw_record() -%}
    {%- if is_incremental() -%}
    delete from {{ this }} as target
    where {% if not whole_table_checks_due() -%}
        (target.connection_id, target.order_external_id) in (
            {{ deleted_raw_keys(['bigcommerce_orders', 'square_payments']) }}
        )
      and {% endif -%}
      (
          (target.source = 'bigcommerce' and not exists (
              select 1 from {{ source('bigcommerce', 'orders') }} as raw_orders
              where raw_orders.connection_id = target.connection_id and raw_orders.pk = target.order_external_id))
       or (target.source = 'square' and not exists (
              select 1 from {{ source('square', 'payments') }} as raw_payments
              where raw_payments.connection_id = target.connection_id and raw_payments.pk = target.order_external_id))
      )
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- Whether a source's raw table exists yet (the extract creates some, e.g. raw.bigcommerce_refunds,
    only once it has landed a record). Always true at parse time. -#}
{% macro source_exists(source_name, table_name) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- do return((not execute) or adapter.get_relation(
        database=relation.database, schema=relation.schema, identifier=relation.identifier) is not none) -%}
{%- endmacro %}

{#- The rows of `relation` (a staging view) whose columns equal a row of `keys` (a CTE or table of
    distinct, non-null keys), looked up key by key. `on` maps the relation's columns to the keys'.
    A semi-join (`(a, b) in (select …)`) lets the planner hash-join instead, which computes the view —
    its JSON parsing and safe casts — for every raw row first (27 s for 20,000 orders at scale 0.1,
    to keep 1,349). In a lateral subquery kept apart by OFFSET 0 the equalities are quals on the view's
    key columns, which Postgres pushes through the view down to the raw table's primary-key index, so
    only the rows asked for are read and parsed. For the small batches of the incremental models. -#}
{% macro lookup_rows(relation, keys, on) -%}
    select found.*
    from {{ keys }} as lookup_keys
    cross join lateral (  -- noqa: ST05
        select *
        from {{ relation }} as looked_up
        where {% for column, key in on.items() -%}
            looked_up.{{ column }} = lookup_keys.{{ key }}{% if not loop.last %} and {% endif %}
        {%- endfor %}
        offset 0
    ) as found
{%- endmacro %}

{#- The columns of `relation` but those in `except`, each prefixed by `alias.` (a model overriding one
    upstream column without listing them all). At parse time, or while `relation` does not exist yet
    (a lint or compile before the first build): `alias.*`. -#}
{% macro columns_except(relation, except, alias) -%}
    {%- set columns = adapter.get_columns_in_relation(relation) if execute else [] -%}
    {%- if not columns -%}
    {{ alias }}.*
    {%- else -%}
    {%- for column in columns if column.name not in except -%}
    {{ alias }}.{{ adapter.quote(column.name) }}{% if not loop.last %}, {% endif %}
    {%- endfor -%}
    {%- endif -%}
{%- endmacro %}


{#- Import CTEs of an incremental rebuild: the source records behind the rebuilt orders of ``orders_cte``
    (a CTE with source, source_order_connection_id, source_order_id), split by source, for ``lookup_rows``:
    bigcommerce_order_keys and square_order_keys, each (connection_id, order_id). Ends with a comma. -#}
{% macro source_order_keys(orders_cte) -%}
source_order_keys as (

    select distinct source, source_order_connection_id as connection_id, source_order_id as order_id
    from {{ orders_cte }}
    where source_order_id is not null

),

bigcommerce_order_keys as (

    select connection_id, order_id from source_order_keys where source = 'bigcommerce'

),

square_order_keys as (

    select connection_id, order_id from source_order_keys where source = 'square'

),
{%- endmacro %}
