{#- One CRM contact per email across every store and location (G1: same email = same contact). -#}
with

customers as (

    select * from {{ ref('int_customers_unioned') }}
    where email_status = 'valid'
      and {{ is_enabled_connection('connection_id') }}

),

final as (

    select
        email,
        -- the most recently updated customer record that has the field wins
        (array_agg(first_name order by external_updated_at desc nulls last, connection_id)
            filter (where first_name is not null))[1] as first_name,
        (array_agg(last_name order by external_updated_at desc nulls last, connection_id)
            filter (where last_name is not null))[1] as last_name,
        (array_agg(phone order by external_updated_at desc nulls last, connection_id)
            filter (where phone is not null))[1] as phone,
        array_agg(
            distinct case source
                when 'bigcommerce' then '{{ var("bigcommerce_customer_tag") }}'
                when 'square' then '{{ var("square_customer_tag") }}'
            end
        ) as tags,
        bool_or(accepts_marketing) as accepts_marketing
    from customers
    group by email

)

select * from final
