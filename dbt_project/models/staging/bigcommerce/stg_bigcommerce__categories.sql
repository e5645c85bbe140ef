with

source as (

    {{ raw_rows(source('bigcommerce', 'categories')) }}

),

renamed as (

    select
        connection_id,
        -- the extract keys the row by the node's id (tree nodes call it `id`, the older catalog endpoint
        -- `category_id`)
        pk as category_id,
        payload ->> 'name' as name,
        nullif(payload ->> 'parent_id', '0') as parent_category_id,
        loaded_at

    from source

)

select * from renamed
