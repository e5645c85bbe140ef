{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='email',
        indexes=[{'columns': ['email']}, {'columns': ['landed_at']}],
        on_schema_change='append_new_columns',
        pre_hook="{{ prepare_customer_contacts_rebuild(['email'], customer_tags_definition()) }}",
        post_hook="{{ record_definition(customer_tags_definition()) }}"
    )
}}
{#- One CRM contact per email across every store and location (G1: same email = same contact).
    Incremental (macros/customer_contacts.sql): a scheduled run rebuilds the emails whose customers
    int_customers_unioned rebuilt, every email when a customer tag var changed. -#}
with

customers as (

    select * from {{ ref('int_customers_unioned') }}
    where email_status = 'valid'
      and {{ is_enabled_connection('connection_id') }}
      {{- rebuilt_customer_contacts(['email']) }}

),

final as (

    select
        email,
        -- the most recently updated customer record that has the field wins (ties: by connection, then customer
        -- id, so an incremental build and a full refresh pick the same one)
        (array_agg(first_name order by external_updated_at desc nulls last, connection_id, customer_external_id)
            filter (where first_name is not null))[1] as first_name,
        (array_agg(last_name order by external_updated_at desc nulls last, connection_id, customer_external_id)
            filter (where last_name is not null))[1] as last_name,
        (array_agg(phone order by external_updated_at desc nulls last, connection_id, customer_external_id)
            filter (where phone is not null))[1] as phone,
        array_agg(
            distinct case source
                when 'bigcommerce' then '{{ var("bigcommerce_customer_tag") }}'
                when 'square' then '{{ var("square_customer_tag") }}'
            end
        ) as tags,
        bool_or(accepts_marketing) as accepts_marketing,
        max(landed_at) as landed_at
    from customers
    group by email

)

select * from final
