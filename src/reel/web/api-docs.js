// Starts Swagger UI on /docs from this server's /openapi.json. A file of its own (not an
// inline script) so the page keeps the strict Content-Security-Policy: script-src 'self'.
/* global SwaggerUIBundle */
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  defaultModelsExpandDepth: 0,
  tryItOutEnabled: false,
  // The page's CSP allows no third-party origin: no validator badge from swagger.io.
  validatorUrl: null,
});
