{#- segment(): one entry of the segment catalogue (macros/segment_catalogue.sql), as a mapping:
    sql (its rows (email, connection_id, segment_key, since) over every row of `from`), rebuild_sql (the same
    over the CTE rebuilt_<from>: the rows of the emails an incremental build of segment_members rebuilds),
    from, within_days.

    key            the segment's name, e.g. 'vip_customer'
    from           a segments model with `email` and `connection_id` columns that segment_members can follow
                   incrementally (one of SEGMENT_SOURCES below)
    where          the condition on one row of `from`; it must not read the clock (now(), current_date, …)
    since          an aggregate over the matching rows: when the contact entered the segment
    key_suffix     an expression that splits the segment per value (key 'purchased_category:shoes')
    roll_up_to_all also emit connection_id = 'all' for contacts matching in any connection — only
                   right for "has any …" conditions; thresholds read models that carry 'all' rows.
    within_days    (column, days): the row must also have `column` within the last `days` whole days
                   (`column >= <today's midnight UTC> - days`: membership changes once a day, at 00:00 UTC),
                   e.g. ('last_order_at', 90). The only way a segment may depend on the clock: a scheduled
                   build then knows which contacts the passing days move out (those whose `column` crossed
                   the window's edge since its previous build) and rebuilds only them
                   (prepare_segment_rebuild), and when the next such day starts (macros/clock.sql).

    Example (add it to macros/segment_catalogue.sql):
        {%- do segments.append(segment('vip_customer', from='contact_ecommerce_profile',
                where='order_count >= 3', within_days=('last_order_at', 180), since='min(last_order_at)')) -%}
-#}
{% macro segment(key, from, where, since, key_suffix=none, roll_up_to_all=false, within_days=none) -%}
    {%- set clock = modules.re.compile(
            '\\b(now|current_date|current_time|current_timestamp|localtime|localtimestamp|clock_timestamp'
            ~ '|statement_timestamp|transaction_timestamp|timeofday)\\b', modules.re.I) -%}
    {%- for part in [where, since, key_suffix or ''] if clock.search(part) -%}
        {%- do exceptions.raise_compiler_error(
                "segment '" ~ key ~ "' reads the clock in `" ~ part ~ "`: give the time window as "
                ~ "within_days=(column, days), so that a scheduled build knows whom the passing days move") -%}
    {%- endfor -%}
    {%- if from not in segment_sources() -%}
        {%- do exceptions.raise_compiler_error(
                "segment '" ~ key ~ "' reads " ~ from ~ ": segment_members follows only "
                ~ segment_sources() | join(", ") ~ " (the models that record the contacts they change)") -%}
    {%- endif -%}
    {%- set condition -%}
        ({{ where }}){% if within_days %} and {{ within_days[0] }} >= {{ utc_day_start() }} - interval '{{ within_days[1] | int }} days'{% endif %}
    {%- endset -%}
    {%- do return({
            'key': key, 'from': from, 'within_days': within_days,
            'sql': segment_rows(key, ref(from), condition, since, key_suffix, roll_up_to_all),
            'rebuild_sql': segment_rows(key, 'rebuilt_' ~ from, condition, since, key_suffix, roll_up_to_all)}) -%}
{%- endmacro %}

{% macro segment_rows(key, rows, condition, since, key_suffix, roll_up_to_all) -%}
    {%- set segment_key -%}
        '{{ key }}'{% if key_suffix %} || ':' || {{ key_suffix }}{% endif %}
    {%- endset -%}
    {%- set split_by = ", " ~ key_suffix if key_suffix else "" -%}
    select email, connection_id, {{ segment_key }} as segment_key, ({{ since }})::timestamptz as since
    from {{ rows }} as segment_rows
    where {{ condition }}
    group by email, connection_id{{ split_by }}
    {%- if roll_up_to_all %}
    union all
    select email, 'all', {{ segment_key }}, ({{ since }})::timestamptz
    from {{ rows }} as segment_rows
    where {{ condition }}
    group by email{{ split_by }}
    {%- endif %}
{%- endmacro %}

{#- The models a segment may read: each is incremental on email, and every email whose rows it changes is
    seen by prepare_segment_rebuild — contact_order_history and contact_ecommerce_profile record them in
    intermediate.incremental_contact_changes; the purchase bridges change a contact's rows only when its
    order history changes too (both rebuild from the orders landed in int_orders_enriched, from the contacts
    crm.ecom_orders took an order from, and from orders joining or leaving crm.ecom_orders). -#}
{% macro segment_sources() -%}
    {%- do return(['contact_ecommerce_profile', 'contact_order_history', 'purchased_products',
                   'purchased_categories']) -%}
{%- endmacro %}

{#- segment_members incremental (delete+insert on email). Its pre-hook computes
    pg_temp.segment_members__rebuild (email), the emails whose memberships may have changed since its previous
    build, and deletes their rows (the model then inserts their memberships anew, in the same transaction):
      - the emails its sources rebuilt since the cutoff (intermediate.incremental_contact_changes: every row,
        whichever model recorded it);
      - for each segment with within_days (column, days): the emails whose `column` crossed the window's edge
        since the previous build, i.e. lies in [midnight UTC of the day of its start (less an hour for clock
        skew) - days, today's midnight UTC - days) — the days begun since moved them out (none within a day);
      - every email (of the sources and of the table), when the catalogue's SQL differs from the one the table
        was built with (intermediate.incremental_watermarks.definition_hash: a segment added, a threshold
        var changed), when one of the sources was built whole after the previous build
        (`<model>__built_whole`, record_incremental_watermark) or when that build is not recorded.
    The cutoff is the previous build's start minus var incremental_lookback_hours, as for every incremental
    model. -#}
{% macro segment_rebuild_relation() -%}
    pg_temp.segment_members__rebuild
{%- endmacro %}

{#- The hash of the catalogue's rebuild SQL: it names its sources by model (rebuilt_<from>), not by relation, so a
    copy or a rename of the database is not taken for a changed catalogue. -#}
{% macro segment_catalogue_hash(segments) -%}
    {%- do return(local_md5(segments | map(attribute='rebuild_sql') | join('\n'))) -%}
{%- endmacro %}

{% macro prepare_segment_rebuild() -%}
    {%- if not is_incremental() -%}
    select 1
    {%- else -%}
    {%- set segments = segment_catalogue() -%}
    {%- set sources = segments | map(attribute='from') | unique | list -%}
    {%- set watermark -%}
        (select built_from from {{ incremental_watermarks_relation() }} where model = '{{ this.identifier }}')
    {%- endset -%}
    {%- set cutoff = "(coalesce(" ~ watermark ~ ", '-infinity'::timestamptz) - interval '"
                     ~ var('incremental_lookback_hours') ~ " hours')" -%}
    {#- The previous build measured its windows from the day it read now() in, at or after its watermark (an
        hour's margin for the dbt host's and the database's clocks): the days begun since moved contacts out. -#}
    {%- set previous_day = utc_day_start("coalesce(" ~ watermark ~ ", '-infinity'::timestamptz) - interval '1 hour'") -%}
    drop table if exists {{ segment_rebuild_relation() }};

    create temporary table segment_members__rebuild as
    with rebuild_everything as (  -- evaluated once, read by each source's branch below
        select {{ segment_rebuild_everything(sources, watermark, segments) }} as every_email
    )
    select email
    from {{ contact_changes_relation() }}
    where changed_at >= {{ cutoff }}
    {%- for segment in segments if segment.within_days %}
    union
    -- {{ segment.key }}: moved out of its {{ segment.within_days[1] | int }}-day window by the days begun since
    select email
    from {{ ref(segment['from']) }}
    where {{ segment.within_days[0] }} >= {{ previous_day }} - interval '{{ segment.within_days[1] | int }} days'
      and {{ segment.within_days[0] }} < {{ utc_day_start() }} - interval '{{ segment.within_days[1] | int }} days'
    {%- endfor %}
    {%- for source in sources %}
    union
    select email
    from {{ ref(source) }}
    where (select every_email from rebuild_everything)
    {%- endfor %}
    {{ replace_rebuilt_emails(segment_rebuild_relation()) }}
    {%- endif -%}
{%- endmacro %}

{#- Whether every email is rebuilt (see prepare_segment_rebuild): a SQL condition. -#}
{% macro segment_rebuild_everything(sources, watermark, segments) -%}
    (
        {{ watermark }} is null
        or {{ definition_changed(segment_catalogue_hash(segments)) }}
        or exists (
            select 1 from {{ incremental_watermarks_relation() }}
            where model in ({% for source in sources %}'{{ source }}__built_whole'{% if not loop.last %}, {% endif %}{% endfor %})
              and built_from > {{ watermark }}
        )
    )
{%- endmacro %}

{#- Post-hook of segment_members: the catalogue's SQL the table now holds (its hash, see prepare_segment_rebuild),
    and when the clock next changes a membership (macros/clock.sql): the next midnight UTC if a segment has a
    within_days window. -#}
{% macro record_segment_catalogue() -%}
    {%- set segments = segment_catalogue() -%}
    {{ record_definition(segment_catalogue_hash(segments)) }};

    {{ record_clock_due(utc_day_start() ~ " + interval '1 day'" if segments | selectattr('within_days') | list else 'null') }}
{%- endmacro %}

{#- Product lines of synced orders, for the incremental purchase bridges. Incrementally, only the contacts
    purchased_contacts_changed() names are re-read — all of their orders, so delete+insert on
    (email, connection_id) rebuilds exactly their rows. A contact left with no synced order (its email changed,
    its orders were excluded) has no row in the batch; purchased_bridge_cleanup() deletes it. When
    whole_table_checks_due() (a connection enabled again, macros/change_events.sql), the contacts with synced
    orders but no rows yet are re-read too. -#}
{% macro purchased_order_lines() -%}
    select
        orders.email,
        orders.connection_id,
        orders.order_key,
        orders.external_created_at as ordered_at,
        orders.landed_at,
        product ->> 'externalid' as product_external_id,
        product ->> 'name' as product_name,
        product ->> 'category' as category_name,
        (product ->> 'quantity')::integer as quantity
    from {{ ref('ecom_orders') }} as orders
    cross join lateral jsonb_array_elements(orders.order_products) as product
    {%- if is_incremental() %}
    where (orders.email, orders.connection_id) in (
        {{ purchased_contacts_changed() }}
        {%- if whole_table_checks_due(['ecom_orders']) %}
        union
        -- contacts with synced orders but no rows yet (their connection was enabled again): a hashed set
        -- difference, not a NOT EXISTS under OR (a correlated scan of the bridge per order line)
        (
            select email, connection_id from {{ ref('ecom_orders') }}
            except
            select email, connection_id from {{ this }}
        )
        {%- endif %}
    )
    {%- endif %}
{%- endmacro %}

{#- The contacts (email, connection_id) whose purchases can have changed since a bridge's cutoff: those with an
    order landed since (int_orders_enriched, not ecom_orders: an archived order changes its contact's rows), and
    those crm.ecom_orders took an order from (its email changed, another account keeps it; an order erased or
    excluded with nothing landed). -#}
{% macro purchased_contacts_changed() -%}
    select email, connection_id
    from {{ ref('int_orders_enriched') }}
    where landed_at >= {{ incremental_cutoff('last_landed_at') }}
      and email is not null
    union
    select email, connection_id
    from {{ contact_changes_relation() }}
    where changed_at >= {{ incremental_cutoff('last_landed_at') }}
      -- not a customer's contacts: a customer's change reaches its orders' landing time
      and recorded_by is distinct from 'int_customers_unioned'
{%- endmacro %}

{#- Pre-hook of the purchase bridges: a contact with no synced order in its connection any more (its email
    changed, its orders were archived or excluded) loses its rows — among purchased_contacts_changed(), or
    every contact when whole_table_checks_due() (a connection disabled). Before the batch, which only has
    contacts with synced orders. -#}
{% macro purchased_bridge_cleanup() -%}
    {%- if is_incremental() -%}
    delete from {{ this }} as bridge
    {%- if not whole_table_checks_due(['ecom_orders']) %}
    using (
        -- each changed contact looked up in crm.ecom_orders by its index (a lateral LIMIT 1; as a NOT EXISTS the
        -- planner hashed every synced order)
        select changed.email, changed.connection_id
        from ({{ purchased_contacts_changed() }}) as changed
        left join lateral (
            select true as present
            from {{ ref('ecom_orders') }} as orders
            where orders.email = changed.email and orders.connection_id = changed.connection_id
            limit 1
        ) as found on true
        where found.present is null
    ) as gone
    where bridge.email = gone.email and bridge.connection_id = gone.connection_id
    {%- else %}
    where not exists (
        select 1 from {{ ref('ecom_orders') }} as orders
        where orders.email = bridge.email and orders.connection_id = bridge.connection_id
    )
    {%- endif %}
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- contact_order_history incremental (delete+insert on email). Its pre-hook computes, before the model
    reads anything, pg_temp.contact_order_history__rebuild (email): the emails whose order history may
    have changed since the cutoff —
      - the contacts purchased_order_lines() re-reads (orders landed in int_orders_enriched, the contacts
        crm.ecom_orders took an order from), widened to the email: the 'all' scope spans connections;
      - when whole_table_checks_due() (macros/change_events.sql: a connection disabled or enabled again,
        crm.ecom_orders built whole), the emails whose set of synced orders differs from the table's (a
        symmetric difference of (order_key, email) with its 'all' rows, one per order, as one hash full
        join). An order erased from raw needs none of it: crm.ecom_orders recorded its contact.
    Every row of those emails is rebuilt; order_history_cleanup() deletes the emails left without an
    order. The emails are also recorded in intermediate.incremental_contact_changes with connection_id
    'all' (the contact across connections), which contact_ecommerce_profile rebuilds in turn. -#}
{% macro order_history_rebuild_relation() -%}
    pg_temp.contact_order_history__rebuild
{%- endmacro %}

{% macro prepare_order_history_rebuild() -%}
    {%- if not is_incremental() -%}
    select 1  -- built whole: record_incremental_watermark records it ('contact_order_history__built_whole')
    {%- else -%}
    drop table if exists {{ order_history_rebuild_relation() }};

    create temporary table contact_order_history__rebuild as
    select email
    from {{ ref('int_orders_enriched') }}
    where landed_at >= {{ incremental_cutoff() }}
      and email is not null
    union
    select email
    from {{ contact_changes_relation() }}
    where changed_at >= {{ incremental_cutoff() }}
      and connection_id <> 'all'
      -- not a customer's contacts: a customer's change reaches its orders' landing time
      and recorded_by is distinct from 'int_customers_unioned'
    {%- if whole_table_checks_due(['ecom_orders']) %}
    union
    -- one hash full join: the orders on one side only (joined, left or moved to another email)
    select coalesce(synced.email, modelled.email) as email
    from {{ ref('ecom_orders') }} as synced
    full join (select order_key, email from {{ this }} where connection_id = 'all') as modelled
        on modelled.order_key = synced.order_key and modelled.email = synced.email
    where (synced.order_key is null or modelled.order_key is null)
      and coalesce(synced.email, modelled.email) is not null
    {%- endif %};

    analyze {{ order_history_rebuild_relation() }};  -- a temporary table: autovacuum never analyses it

    insert into {{ contact_changes_relation() }} (email, connection_id, changed_at, recorded_by)
    select email, 'all', now(), '{{ this.identifier }}' from {{ order_history_rebuild_relation() }}
    {%- endif -%}
{%- endmacro %}

{#- Post-hook of contact_order_history: a rebuilt email with no synced order left loses its rows. -#}
{% macro order_history_cleanup() -%}
    {%- if is_incremental() -%}
    delete from {{ this }} as history
    where history.email in (select email from {{ order_history_rebuild_relation() }})
      and not exists (
          select 1 from {{ ref('ecom_orders') }} as orders
          where orders.email = history.email
      )
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- contact_ecommerce_profile: the customer scopes of its rows, (email, connection_id or 'all'):
    accepts_marketing, customer_since and customer_landed_at (the newest int_customers_unioned.landed_at)
    of the contact's customer accounts in scope, with the abandoned carts in scope (abandoned_cart_count,
    first_abandoned_at). The model's own columns in a full build, and what an incremental build compares
    with its stored rows. Reads the CTEs ecom_customers, customers and abandoned_carts. -#}
{% macro profile_customer_scopes() -%}
    with

    customer_scopes as (

        select
            ecom_customers.email,
            coalesce(ecom_customers.connection_id, 'all') as connection_id,
            bool_or(ecom_customers.accepts_marketing) as accepts_marketing,
            min(customers.external_created_at) as customer_since,
            max(customers.landed_at) as customer_landed_at
        from ecom_customers
        inner join customers
            on customers.connection_id = ecom_customers.connection_id
            and customers.customer_external_id = ecom_customers.external_id
        group by grouping sets ((ecom_customers.email, ecom_customers.connection_id), (ecom_customers.email))

    ),

    cart_scopes as (

        select
            email,
            coalesce(connection_id, 'all') as connection_id,
            count(*) as abandoned_cart_count,
            min(abandoned_at) as first_abandoned_at
        from abandoned_carts
        group by grouping sets ((email, connection_id), (email))

    )

    select
        customer_scopes.email,
        customer_scopes.connection_id,
        customer_scopes.accepts_marketing,
        customer_scopes.customer_since,
        customer_scopes.customer_landed_at,
        coalesce(cart_scopes.abandoned_cart_count, 0) as abandoned_cart_count,
        cart_scopes.first_abandoned_at
    from customer_scopes
    left join cart_scopes using (email, connection_id)
{%- endmacro %}

{#- contact_ecommerce_profile incremental (delete+insert on email). Its pre-hook computes
    pg_temp.contact_ecommerce_profile__rebuild (email), the emails to rebuild whole:
      - those contact_order_history rebuilt since the cutoff (incremental_contact_changes, 'all', not its own);
      - every email, once, when contact_order_history was built whole after this model's last build
        (intermediate.incremental_watermarks 'contact_order_history__built_whole': a --full-refresh of it
        alone, or its table upgraded, macros/upgrade.sql), as its rows may all have changed;
      - those whose stored customer and cart columns differ from fresh scopes (profile_customer_scopes(), in
        pg_temp.contact_ecommerce_profile__scopes), both ways (a hashed symmetric difference): a customer's
        email, accepts_marketing or landing changed, a cart turned abandoned by the clock with nothing landed, a
        scope gained or lost. The scopes are computed, and compared, for the candidate emails only
        (pg_temp.contact_ecommerce_profile__candidates): the emails above, the contacts of the customers
        int_customers_unioned rebuilt since the cutoff (incremental_contact_changes, recorded_by
        int_customers_unioned, as they were and as they are), and every email with an abandoned cart now or in
        the table. When whole_table_checks_due() (a connection changed, macros/change_events.sql, or
        int_customers_unioned built whole): for every email.
    The temporary tables are analysed (autovacuum never reaches them). The emails are recorded in
    intermediate.incremental_contact_changes ('all', recorded_by contact_ecommerce_profile) for segment_members.
    profile_cleanup() then deletes the rows of those emails whose scope is gone. -#}
{% macro profile_rebuild_relation(part='rebuild') -%}
    pg_temp.contact_ecommerce_profile__{{ part }}
{%- endmacro %}

{% macro prepare_profile_rebuild() -%}
    {%- if not is_incremental() -%}
    select 1
    {%- else -%}
    {%- set compared = 'email, connection_id, accepts_marketing, customer_since, customer_landed_at, '
                       ~ 'abandoned_cart_count, first_abandoned_at' -%}
    {%- set whole = whole_table_checks_due(['int_customers_unioned']) -%}
    {%- set history_built_whole -%}
        (select built_from from {{ incremental_watermarks_relation() }}
         where model = 'contact_order_history__built_whole')
        > coalesce((select built_from from {{ incremental_watermarks_relation() }}
                    where model = '{{ this.identifier }}'), '-infinity'::timestamptz)
    {%- endset -%}
    {%- set candidate_filter = '' if whole else ' where email in (select email from '
                                                ~ profile_rebuild_relation('candidates') ~ ')' -%}
    drop table if exists {{ profile_rebuild_relation('scopes') }};
    drop table if exists {{ profile_rebuild_relation('candidates') }};
    drop table if exists {{ profile_rebuild_relation() }};

    create temporary table contact_ecommerce_profile__rebuild as
    select email
    from {{ contact_changes_relation() }}
    where changed_at >= {{ incremental_cutoff('last_landed_at') }}
      and connection_id = 'all'
      and recorded_by is distinct from '{{ this.identifier }}'  -- not the emails it rebuilt itself
    union
    -- contact_order_history was built whole after this model's last build (its rows may all have changed):
    -- every email, once
    select email
    from {{ ref('contact_order_history') }}
    where connection_id = 'all' and {{ history_built_whole }}
    union
    select email
    from {{ this }}
    where {{ history_built_whole }};

    create temporary table contact_ecommerce_profile__candidates as
    select email from {{ profile_rebuild_relation() }}
    {%- if not whole %}
    union
    select email
    from {{ contact_changes_relation() }}
    where changed_at >= {{ incremental_cutoff('last_landed_at') }}
      and recorded_by = 'int_customers_unioned'

    union
    select email from {{ ref('abandoned_carts') }}
    union
    select email from {{ this }} where abandoned_cart_count > 0
    {%- endif %};

    analyze {{ profile_rebuild_relation('candidates') }};  -- a temporary table: autovacuum never analyses it

    create temporary table contact_ecommerce_profile__scopes as
    with ecom_customers as (select * from {{ ref('ecom_customers') }}{{ candidate_filter }}),
    customers as (select * from {{ ref('int_customers_unioned') }}),
    abandoned_carts as (select * from {{ ref('abandoned_carts') }}{{ candidate_filter }}),
    scopes as ({{ profile_customer_scopes() }})
    select * from scopes;

    analyze {{ profile_rebuild_relation('scopes') }};

    insert into {{ profile_rebuild_relation() }} (email)
    select email
    from (
        (
            select {{ compared }} from {{ profile_rebuild_relation('scopes') }}
            except
            select {{ compared }} from {{ this }}{{ candidate_filter }}
        )
        union all
        (
            select {{ compared }} from {{ this }}{{ candidate_filter }}
            except
            select {{ compared }} from {{ profile_rebuild_relation('scopes') }}
        )
    ) as changed_scopes
    where email is not null;

    analyze {{ profile_rebuild_relation() }};

    -- for segment_members: the emails rebuilt here (a customer or cart change, the clock turning a cart abandoned)
    insert into {{ contact_changes_relation() }} (email, connection_id, changed_at, recorded_by)
    select distinct email, 'all', now(), '{{ this.identifier }}' from {{ profile_rebuild_relation() }}
    {%- endif -%}
{%- endmacro %}

{#- Post-hook of contact_ecommerce_profile: a rebuilt email's rows whose customer scope is gone. -#}
{% macro profile_cleanup() -%}
    {%- if is_incremental() -%}
    delete from {{ this }} as profile
    where profile.email in (select email from {{ profile_rebuild_relation() }})
      and not exists (
          select 1 from {{ profile_rebuild_relation('scopes') }} as scopes
          where scopes.email = profile.email and scopes.connection_id = profile.connection_id
      )
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- contact_revenue_by_currency incremental (delete+insert on email). Its pre-hook computes
    pg_temp.contact_revenue_by_currency__rebuild (email) and deletes those emails' rows (the model inserts them
    anew, so an email left without an order keeps none):
      - the emails contact_order_history rebuilt since the cutoff (intermediate.incremental_contact_changes,
        connection_id 'all', recorded_by contact_order_history): its rows are sums of theirs;
      - every email (of the history and of the table) when this table has no watermark (a table of an older
        version, when the model was a plain table) or contact_order_history was built whole after its last
        build. -#}
{% macro revenue_rebuild_relation() -%}
    pg_temp.contact_revenue_by_currency__rebuild
{%- endmacro %}

{% macro prepare_revenue_rebuild() -%}
    {%- if not is_incremental() -%}
    select 1
    {%- else -%}
    {%- set watermark -%}
        (select built_from from {{ incremental_watermarks_relation() }} where model = '{{ this.identifier }}')
    {%- endset -%}
    drop table if exists {{ revenue_rebuild_relation() }};

    create temporary table contact_revenue_by_currency__rebuild as
    with rebuild_everything as (
        select
            {{ watermark }} is null
            or coalesce((select built_from from {{ incremental_watermarks_relation() }}
                         where model = 'contact_order_history__built_whole') > {{ watermark }}, false)
            as every_email
    )
    select email
    from {{ contact_changes_relation() }}
    where changed_at >= {{ incremental_cutoff('last_order_at') }}
      and connection_id = 'all'
      and recorded_by = 'contact_order_history'
    union
    select email
    from {{ ref('contact_order_history') }}
    where connection_id = 'all' and (select every_email from rebuild_everything)
    {{ replace_rebuilt_emails(revenue_rebuild_relation()) }}
    {%- endif -%}
{%- endmacro %}

{#- The end of an email rebuild set's pre-hook (segment_members, contact_revenue_by_currency): the set, a
    temporary table made by a `create temporary table … as select email …` ending here, gets every email of the
    table when the CTE rebuild_everything says so; then it is analysed (autovacuum never reaches a temporary
    table) and the rows of its emails are deleted: the model inserts them anew. -#}
{% macro replace_rebuilt_emails(relation) -%}
    union
    select email
    from {{ this }}
    where (select every_email from rebuild_everything);

    analyze {{ relation }};

    delete from {{ this }}
    where email in (select email from {{ relation }})
{%- endmacro %}
