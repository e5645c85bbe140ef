with

customers as (

    select * from {{ ref('int_customers_unioned') }}

),

final as (

    select
        connection_id || '|' || customer_external_id as ecom_customer_key,
        connection_id,
        customer_external_id as external_id,
        email,
        accepts_marketing
    from customers
    -- S1: only customers with a (valid) email address reach the CRM; the rest are in excluded_records
    where email_status = 'valid'
      and {{ is_enabled_connection('connection_id') }}

)

select * from final
