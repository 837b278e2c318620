// Starts Swagger UI on /docs. A file of its own rather than an inline script,
// so the page's Content-Security-Policy allows scripts from 'self' only.
window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  deepLinking: true,
  displayOperationId: true,
  showExtensions: true,
  defaultModelsExpandDepth: 0,
  tryItOutEnabled: false,
  // No online validator badge: it would ask a server on the internet.
  validatorUrl: null,
});
