{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['connection_id', 'customer_external_id'],
        indexes=[{'columns': ['connection_id', 'customer_external_id']}, {'columns': ['landed_at']}],
        on_schema_change='append_new_columns',
        pre_hook="{{ prepare_customers_rebuild() }}",
        post_hook="{{ record_rebuilt_customers() }}"
    )
}}
{#- Every e-commerce customer of every connection, whether or not it will sync (the crm marts filter).
    Incremental (macros/incremental.sql, macros/customers_rebuild.sql): a scheduled run rebuilds the
    customers in the rebuild set its pre-hook computed from the raw tables' keys and loaded_at (customer
    records, orders, newsletter consents and Square profiles and payments landed since the cutoff, orders
    whose raw record is gone) and deleted first, so a customer left with nothing to build from is gone
    as on a full refresh. -#}
with

{% if is_incremental() %}
rebuild as (

    select source, connection_id, customer_external_id from {{ customers_rebuild_relation() }}

),

bigcommerce_rebuild as (

    select distinct connection_id, customer_external_id from rebuild where source = 'bigcommerce'

),

square_rebuild as (

    select distinct connection_id, customer_external_id from rebuild where source = 'square'

),

{% endif %}
bigcommerce_customers as (

    {%- if is_incremental() %}
    {{ lookup_rows(ref('stg_bigcommerce__customers'), 'bigcommerce_rebuild',
                   {'connection_id': 'connection_id', 'customer_id': 'customer_external_id'}) }}
    {%- else %}
    select * from {{ ref('stg_bigcommerce__customers') }}
    {%- endif %}

),

bigcommerce_orders as (

    {%- if is_incremental() %}
    -- the rebuilt customers' orders, found by primary key (customers_rebuild.sql lists them), then
    -- checked against the order's own customer_id
    select *
    from (
        {{ lookup_rows(ref('stg_bigcommerce__orders'), customers_rebuild_relation('orders'),
                       {'connection_id': 'connection_id', 'order_id': 'order_id'}) }}
    ) as rebuilt_customers_orders
    where (connection_id, customer_id) in (select connection_id, customer_external_id from bigcommerce_rebuild)
    {%- else %}
    select * from {{ ref('stg_bigcommerce__orders') }}
    {%- endif %}

),

bigcommerce_subscribers as (

    select * from {{ ref('stg_bigcommerce__subscribers') }}

),

square_customers as (

    {%- if is_incremental() %}
    -- every landing of the rebuilt profiles: the rebuild set lists each of their (connection, customer) pairs
    {{ lookup_rows(ref('stg_square__customers'), 'square_rebuild',
                   {'connection_id': 'connection_id', 'customer_id': 'customer_external_id'}) }}
    {%- else %}
    select * from {{ ref('stg_square__customers') }}
    {%- endif %}

),

square_payments as (

    select * from {{ ref('stg_square__payments') }}

),

-- B3: an account seen on an order before the customers stream caught up still becomes a customer,
-- described by its latest order's billing address.
bigcommerce_customers_from_orders as (

    select distinct on (connection_id, customer_id)
        connection_id,
        customer_id,
        billing_email as email,
        billing_first_name as first_name,
        billing_last_name as last_name,
        billing_phone as phone,
        created_at,
        updated_at,
        loaded_at
    from bigcommerce_orders
    where customer_id is not null
    order by connection_id, customer_id, updated_at desc

),

bigcommerce_known_customers as (

    select connection_id, customer_id, email, first_name, last_name, phone, created_at, updated_at, loaded_at
    from bigcommerce_customers

    union all

    select from_orders.*
    from bigcommerce_customers_from_orders as from_orders
    where not exists (
        select 1
        from bigcommerce_customers
        where bigcommerce_customers.connection_id = from_orders.connection_id
          and bigcommerce_customers.customer_id = from_orders.customer_id
    )

),

newsletter_consents as (

    select connection_id, email, bool_or(has_newsletter_consent) as has_newsletter_consent,
        max(loaded_at) as loaded_at
    from bigcommerce_subscribers
    where email is not null
    group by connection_id, email

),

order_opt_ins as (

    select connection_id, customer_id, bool_or(is_email_opt_in) as has_opted_in_on_an_order,
        max(loaded_at) as loaded_at
    from bigcommerce_orders
    where customer_id is not null
    group by connection_id, customer_id

),

bigcommerce as (

    select
        'bigcommerce' as source,
        customers.connection_id,
        customers.customer_id as customer_external_id,
        customers.email,
        customers.first_name,
        customers.last_name,
        customers.phone,
        -- B6: the store's newsletter consent for this email, or the opt-in box ticked on any of their orders
        coalesce(newsletter_consents.has_newsletter_consent, false)
            or coalesce(order_opt_ins.has_opted_in_on_an_order, false) as accepts_marketing,
        customers.created_at as external_created_at,
        customers.updated_at as external_updated_at,
        -- the latest landing of the customer, its orders or its newsletter consent
        greatest(customers.loaded_at, newsletter_consents.loaded_at, order_opt_ins.loaded_at) as landed_at
    from bigcommerce_known_customers as customers
    left join newsletter_consents
        on newsletter_consents.connection_id = customers.connection_id
        and newsletter_consents.email = customers.email
    left join order_opt_ins
        on order_opt_ins.connection_id = customers.connection_id
        and order_opt_ins.customer_id = customers.customer_id

),

-- Square customer profiles are merchant-wide: the extract may land one under any location.
square_customer_profiles as (

    select distinct on (customer_id)
        *,
        max(loaded_at) over (partition by customer_id) as landed_at
    from square_customers
    order by customer_id, updated_at desc nulls last, loaded_at desc

),

-- A location's customers: those landed under it plus those who paid there.
square_connection_customers as (

    {%- if is_incremental() %}
    -- the rebuilt customers' pairs, listed by the pre-hook (customers_rebuild.sql) from the same sources
    select connection_id, customer_external_id as customer_id from square_rebuild
    {%- else %}
    select connection_id, customer_id from square_customers
    union
    select connection_id, customer_id from square_payments where customer_id is not null
    {%- endif %}

),

square as (

    select
        'square' as source,
        connection_customers.connection_id,
        profiles.customer_id as customer_external_id,
        profiles.email,
        profiles.first_name,
        profiles.last_name,
        profiles.phone,
        -- an email address they have not unsubscribed
        profiles.email is not null and not profiles.is_email_unsubscribed as accepts_marketing,
        profiles.created_at as external_created_at,
        profiles.updated_at as external_updated_at,
        profiles.landed_at
    from square_connection_customers as connection_customers
    inner join square_customer_profiles as profiles
        on profiles.customer_id = connection_customers.customer_id

),

unioned as (

    select * from bigcommerce
    union all
    select * from square

),

final as (

    select
        source,
        connection_id,
        customer_external_id,
        email,
        {{ email_status('email') }} as email_status,
        first_name,
        last_name,
        phone,
        accepts_marketing,
        external_created_at,
        external_updated_at,
        landed_at
    from unioned

)

select * from final
