{#- The incremental rebuild set of int_customers_unioned, computed by its pre-hook before the model reads
    anything, from the raw tables' primary keys and loaded_at (index- and TOAST-friendly: only the rows
    landed since the cutoff have their JSON read) and from the previous state of the tables:

    pg_temp.int_customers_unioned__rebuild (source, connection_id, customer_external_id)
      BigCommerce: customer records landed since the cutoff; the customers of orders landed since
        then, before (int_orders_unioned, not yet rebuilt this run) and after; the customers whose email has a
        newsletter consent landed since then; the customers of orders whose raw record is gone (erased).
      Square (profiles are merchant-wide, so a customer id is rebuilt in every connection): profiles and
        payments landed since the cutoff, and customers of payments whose raw record is gone; when a location's
        record landed or was deleted since the cutoff (the profiles spread to the locations whose record landed,
        macros/square_merchant.sql), or whole_table_checks_due() (a connection added or deleted), also the pairs
        staging has that the table lacks and the pairs the table has that staging lacks; each with every
        connection it has a profile landed under or a payment at.
      Deletions are read from state.change_events (macros/change_events.sql); when whole_table_checks_due()
      (a raw table truncated, a connection changed) every order is checked against its raw record instead.
    pg_temp.int_customers_unioned__rebuild_orders (connection_id, order_id)
      The BigCommerce orders of the rebuilt customers, by primary key, so the model never scans every
      order's JSON for its customer_id.

    Then the rows of the rebuild set are deleted, their contacts recorded in
    intermediate.incremental_contact_changes (recorded_by int_customers_unioned, for contact_ecommerce_profile):
    the model inserts those that still have something to be built from, exactly as a full refresh would. -#}
{% macro customers_rebuild_relation(part='customers') -%}
    pg_temp.int_customers_unioned__rebuild{% if part == 'orders' %}_orders{% endif %}
{%- endmacro %}

{% macro prepare_customers_rebuild() -%}
    {%- if not is_incremental() -%}
    select 1
    {%- else -%}
    {%- set orders_unioned = adapter.get_relation(
            database=this.database, schema=this.schema, identifier='int_orders_unioned') -%}
    {%- set whole = whole_table_checks_due() -%}
    {#- the merchant's profiles spread to a location once its record lands (macros/square_merchant.sql): a landing
        or a deletion of raw.square_locations since the cutoff changes the pairs too -#}
    {%- set square_locations_changed = execute and run_query(
            "select exists (select from " ~ source('square', 'locations') ~ " where loaded_at >= "
            ~ incremental_cutoff() ~ ") or exists (" ~ deleted_raw_keys(['square_locations']) ~ ")"
        ).columns[0].values()[0] -%}
    drop table if exists {{ customers_rebuild_relation() }};
    drop table if exists {{ customers_rebuild_relation('orders') }};

    create temporary table int_customers_unioned__rebuild as
    with

    cutoff as (

        select {{ incremental_cutoff() }} as landed_after

    ),

    landed_orders as (

        select connection_id, pk as order_id, nullif(nullif(trim(payload ->> 'customer_id'), ''), '0') as customer_id
        from {{ source('bigcommerce', 'orders') }}
        where loaded_at >= (select landed_after from cutoff)

    ),

    bigcommerce as (

        select connection_id, pk as customer_external_id
        from {{ source('bigcommerce', 'customers') }}
        where loaded_at >= (select landed_after from cutoff)

        union

        select connection_id, customer_id from landed_orders where customer_id is not null

        union

        select previous.connection_id, previous.customer_external_id
        from {{ this }} as previous
        where previous.source = 'bigcommerce'
          and (previous.connection_id, previous.email) in (
              select connection_id, {{ normalize_email("payload ->> 'email'") }}
              from {{ source('bigcommerce', 'subscribers') }}
              where loaded_at >= (select landed_after from cutoff)
          )
        {%- if orders_unioned %}

        union

        select orders.connection_id, orders.customer_external_id
        from {{ orders_unioned }} as orders
        where orders.source = 'bigcommerce'
          and orders.customer_external_id is not null
          and (
              (orders.connection_id, orders.order_external_id) in (select connection_id, order_id from landed_orders)
              {%- if whole %}
              or not exists (
                  select 1 from {{ source('bigcommerce', 'orders') }} as raw_orders
                  where raw_orders.connection_id = orders.connection_id
                    and raw_orders.pk = orders.order_external_id
              )
              {%- else %}
              or (orders.connection_id, orders.order_external_id) in (
                  {{ deleted_raw_keys(['bigcommerce_orders']) }}
              )
              {%- endif %}
          )
        {%- endif %}

    ),

    landed_payments as (

        select connection_id, pk as payment_id, nullif(trim(payload ->> 'customer_id'), '') as customer_id
        from {{ source('square', 'payments') }}
        where loaded_at >= (select landed_after from cutoff)

    ),

    square_ids as (

        select pk as customer_id
        from {{ source('square', 'customers') }}
        where loaded_at >= (select landed_after from cutoff)

        union

        select customer_id from landed_payments where customer_id is not null
        {%- if whole or square_locations_changed %}

        union

        -- pairs staging has that the table lacks (a location added, or its record landed: the merchant's
        -- profiles spread to it) ...
        select staged.customer_id
        from {{ ref('stg_square__customers') }} as staged
        where not exists (
            select 1 from {{ this }} as previous
            where previous.source = 'square'
              and previous.connection_id = staged.connection_id
              and previous.customer_external_id = staged.customer_id
        )

        union

        -- ... and pairs the table has that staging lacks (a location connection deleted, its record gone): each
        -- customer id is rebuilt from its profiles and payments
        select previous.customer_external_id
        from {{ this }} as previous
        where previous.source = 'square'
          and not exists (
              select 1 from {{ ref('stg_square__customers') }} as staged
              where staged.connection_id = previous.connection_id
                and staged.customer_id = previous.customer_external_id
          )
        {%- endif %}
        {%- if orders_unioned %}

        union

        select orders.customer_external_id
        from {{ orders_unioned }} as orders
        where orders.source = 'square'
          and orders.customer_external_id is not null
          {%- if not whole %}
          and (orders.connection_id, orders.order_external_id) in ({{ deleted_raw_keys(['square_payments']) }})
          {%- endif %}
          and not exists (
              select 1 from {{ source('square', 'payments') }} as raw_payments
              where raw_payments.connection_id = orders.connection_id
                and raw_payments.pk = orders.order_external_id
          )
        {%- endif %}

    ),

    square as (

        select connection_id, customer_id
        from {{ ref('stg_square__customers') }}
        where customer_id in (select customer_id from square_ids)

        union

        select connection_id, customer_id
        from landed_payments
        where customer_id in (select customer_id from square_ids)

        union

        -- the pairs the table has (one whose connection is gone is deleted, and not built again)
        select previous.connection_id, previous.customer_external_id
        from {{ this }} as previous
        where previous.source = 'square'
          and previous.customer_external_id in (select customer_id from square_ids)
        {%- if orders_unioned %}

        union

        select orders.connection_id, orders.customer_external_id
        from {{ orders_unioned }} as orders
        where orders.source = 'square'
          and orders.customer_external_id in (select customer_id from square_ids)
          and exists (
              select 1 from {{ source('square', 'payments') }} as raw_payments
              where raw_payments.connection_id = orders.connection_id
                and raw_payments.pk = orders.order_external_id
          )
        {%- endif %}

    )

    select 'bigcommerce'::text as source, connection_id, customer_external_id from bigcommerce
    where customer_external_id is not null
    union all
    select 'square'::text, connection_id, customer_id from square;

    create temporary table int_customers_unioned__rebuild_orders as
    {%- if orders_unioned %}
    select orders.connection_id, orders.order_external_id as order_id
    from {{ orders_unioned }} as orders
    where orders.source = 'bigcommerce'
      and (orders.connection_id, orders.customer_external_id) in (
          select connection_id, customer_external_id from {{ customers_rebuild_relation() }}
          where source = 'bigcommerce'
      )
    union
    select connection_id, pk
    from {{ source('bigcommerce', 'orders') }}
    where loaded_at >= {{ incremental_cutoff() }};
    {%- else %}
    select connection_id, pk as order_id from {{ source('bigcommerce', 'orders') }};
    {%- endif %}

    analyze {{ customers_rebuild_relation() }};
    analyze {{ customers_rebuild_relation('orders') }};

    with deleted as (
        delete from {{ this }} as target
        where {{ in_customers_rebuild('target') }}
        returning target.email, target.connection_id
    )
    -- the contacts these customers belonged to, for contact_ecommerce_profile (their accounts, consent or email
    -- may have changed, and a rebuilt customer's landing time does not always move: an erased order's opt-in)
    insert into {{ contact_changes_relation() }} (email, connection_id, changed_at, recorded_by)
    select distinct email, connection_id, now(), '{{ this.identifier }}'
    from deleted
    where email is not null
    {%- endif -%}
{%- endmacro %}

{#- Post-hook of int_customers_unioned: the contacts of the customers it rebuilt, as they are now (the pre-hook
    recorded them as they were), for contact_ecommerce_profile: a rebuilt customer's landing time does not always
    move (a merchant's profile spread to a location whose record landed later keeps the profile's). -#}
{% macro record_rebuilt_customers() -%}
    {%- if not is_incremental() -%}
    select 1
    {%- else -%}
    insert into {{ contact_changes_relation() }} (email, connection_id, changed_at, recorded_by)
    select distinct target.email, target.connection_id, now(), '{{ this.identifier }}'
    from {{ this }} as target
    where target.email is not null
      and {{ in_customers_rebuild('target') }}
    {%- endif -%}
{%- endmacro %}

{#- Whether the int_customers_unioned row `alias` is in the rebuild set: a BigCommerce customer by
    (connection_id, customer_external_id); a Square customer by its id alone (profiles are merchant-wide: the id is
    rebuilt in every connection). -#}
{% macro in_customers_rebuild(alias) -%}
    (({{ alias }}.source = 'bigcommerce' and ({{ alias }}.connection_id, {{ alias }}.customer_external_id) in (
          select connection_id, customer_external_id from {{ customers_rebuild_relation() }}
          where source = 'bigcommerce'))
     or ({{ alias }}.source = 'square' and {{ alias }}.customer_external_id in (
          select customer_external_id from {{ customers_rebuild_relation() }} where source = 'square')))
{%- endmacro %}
