"""HTTP mechanics shared by every module: app factory, error shape, context, auth."""
