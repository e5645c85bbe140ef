with

source as (

    select * from {{ source('bigcommerce', 'categories') }}

),

renamed as (

    select
        connection_id,
        -- tree nodes call it `id`, the older catalog endpoint `category_id`
        coalesce(payload ->> 'category_id', payload ->> 'id') as category_id,
        payload ->> 'name' as name,
        nullif(payload ->> 'parent_id', '0') as parent_category_id

    from source

)

select * from renamed
